//! The hallucination detector's grounding check as the edge agent runs it
//! on a usage report (GAP-023): a typical response against a few retrieved
//! rows, and the worst case the limits allow (a 64 KiB response, 50 claims,
//! a full 1,000-passage corpus), which bounds what one report can cost.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::Duration;

use aos_core::grounding::{Corpus, MAX_CORPUS_BYTES, MAX_PASSAGES, Passage, check};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn passage(i: usize, words: usize) -> Passage {
    let text =
        (0..words).map(|w| format!("term{}x{}", (i * 7 + w) % 5_000, w % 13)).collect::<Vec<_>>().join(" ");
    Passage { doc_id: format!("doc-{i}"), text: format!("{text}. Amount {i}.50 USD.") }
}

fn bench_grounding(c: &mut Criterion) {
    let mut group = c.benchmark_group("grounding");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));

    let typical: Corpus = (0..5).map(|i| passage(i, 30)).collect();
    let answer = "term0x0 term7x1 term14x2 term21x3 appear here. Amount 0.50 USD is right [doc:doc-0]. \
                  Something invented about 42 moons entirely.";
    group.bench_function(BenchmarkId::new("check", "typical_5_passages"), |b| {
        b.iter(|| black_box(check(black_box(answer), &[], &typical)));
    });

    // Worst case: the corpus at its limits, a response of 100+ claims none
    // of which any passage supports (every passage is compared).
    let words = MAX_CORPUS_BYTES / MAX_PASSAGES / 14;
    let full: Corpus = (0..MAX_PASSAGES).map(|i| passage(i, words)).collect();
    assert_eq!(full.len(), MAX_PASSAGES);
    // No numbers, so no passage is ruled out early by them.
    let letters = |mut n: usize| {
        let mut s = String::new();
        loop {
            s.push(char::from(b'a' + u8::try_from(n % 26).unwrap()));
            n /= 26;
            if n == 0 {
                return s;
            }
        }
    };
    let fabricated = (0..2_000)
        .map(|i| {
            format!("Unsupported statement mentions zebra{} quokka{} wombat", letters(i), letters(i + 7))
        })
        .collect::<Vec<_>>()
        .join(". ");
    group.bench_function(BenchmarkId::new("check", "worst_case_limits"), |b| {
        b.iter(|| black_box(check(black_box(&fabricated), &[], &full)));
    });
    group.bench_function(BenchmarkId::new("index", "one_passage"), |b| {
        b.iter(|| {
            let mut corpus = Corpus::default();
            corpus.push(black_box(passage(1, 60)));
            black_box(corpus)
        });
    });
    group.finish();
}

criterion_group!(benches, bench_grounding);
criterion_main!(benches);
