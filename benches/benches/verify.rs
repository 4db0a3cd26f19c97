//! Snapshot verification as an edge agent does it on receipt: envelope
//! parse, SHA-256, ed25519, payload decode, validation and scope indexing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::Duration;

use aos_benches::AosEquivalent;
use aos_benches::scenario::policies;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for n in [10usize, 1000] {
        let aos = AosEquivalent::new(&policies(n)).unwrap();
        group.bench_with_input(BenchmarkId::new("snapshot", n), &aos, |b, aos| {
            b.iter(|| black_box(aos.verify_again().unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
