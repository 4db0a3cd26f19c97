//! `decide` with 1, 10, 100 and 1,000 policies, side by side with the same
//! decision in Cedar and in Rego (regorus interpreter and bytecode VM).
//! Each iteration is one decision; requests cycle through the scenario's
//! mix of allowed and denied steps. `tests/equivalence.rs` proves all four
//! engines return the same outcome for every request.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::Duration;

use aos_benches::scenario::{policies, requests};
use aos_benches::{AosEquivalent, CedarEquivalent, RegoEquivalent, RegoVmEquivalent};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 4] = [1, 10, 100, 1000];

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for n in SIZES {
        group.sample_size(if n >= 1000 { 20 } else { 60 });
        let set = policies(n);
        let reqs = requests(n);

        let aos = AosEquivalent::new(&set).unwrap();
        group.bench_with_input(BenchmarkId::new("aos", n), &reqs, |b, reqs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(aos.decide(black_box(&reqs[i])))
            });
        });

        let cedar = CedarEquivalent::new(&set).unwrap();
        group.bench_with_input(BenchmarkId::new("cedar", n), &reqs, |b, reqs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(cedar.decide(black_box(&reqs[i])).unwrap())
            });
        });

        let rego = RegoEquivalent::new(&set).unwrap();
        group.bench_with_input(BenchmarkId::new("rego", n), &reqs, |b, reqs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(rego.decide(black_box(&reqs[i])).unwrap())
            });
        });

        let rego_vm = RegoVmEquivalent::new(&set).unwrap();
        group.bench_with_input(BenchmarkId::new("rego-vm", n), &reqs, |b, reqs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(rego_vm.decide(black_box(&reqs[i])).unwrap())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
