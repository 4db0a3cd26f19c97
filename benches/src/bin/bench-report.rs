//! Prints the benchmark tables for `benches/README.md`.
//!
//! 1. Per-call latency percentiles of `aos_core::decide` (p50/p99/p99.9),
//!    measured here call by call with a monotonic clock, for 1, 10, 100 and
//!    1,000 policies.
//! 2. The criterion medians of `cargo bench -p aos-benches` (decide versus
//!    Cedar and Rego, snapshot verification), read from
//!    `$CARGO_TARGET_DIR/criterion` (or `target/criterion`), with ratios.
//!
//! Run `cargo bench -p aos-benches` first, then
//! `cargo run --release -p aos-benches --bin bench-report`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aos_benches::AosEquivalent;
use aos_benches::scenario::{policies, requests};

const SIZES: [usize; 4] = [1, 10, 100, 1000];

fn main() {
    println!("### decide latency per call (aos_core::decide, this machine)\n");
    println!("| policies | p50 | p99 | p99.9 | calls |");
    println!("|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let Ok(aos) = AosEquivalent::new(&policies(n)) else {
            eprintln!("could not build the {n}-policy snapshot");
            std::process::exit(1);
        };
        let reqs = requests(n);
        let calls = if n >= 1000 { 20_000 } else { 200_000 };
        for i in 0..calls / 10 {
            std::hint::black_box(aos.decide(&reqs[i % reqs.len()]));
        }
        let mut samples = Vec::with_capacity(calls);
        for i in 0..calls {
            let req = &reqs[i % reqs.len()];
            let start = Instant::now();
            std::hint::black_box(aos.decide(std::hint::black_box(req)));
            samples.push(start.elapsed().as_nanos());
        }
        samples.sort_unstable();
        let pct = |p: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "index into a sorted sample"
            )]
            let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
            #[expect(clippy::cast_precision_loss, reason = "nanoseconds of one call fit in f64 exactly")]
            let ns = samples[idx] as f64;
            fmt_ns(ns)
        };
        println!("| {n} | {} | {} | {} | {calls} |", pct(0.50), pct(0.99), pct(0.999));
    }

    let dir = criterion_dir();
    println!("\n### decide versus Cedar and Rego (criterion median per decision)\n");
    println!(
        "| policies | AOS | Cedar | Rego (interpreter) | Rego (VM) | Cedar ÷ AOS | Rego ÷ AOS | Rego VM ÷ AOS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let get = |engine: &str| median_ns(&dir.join("decide").join(engine).join(n.to_string()));
        let (aos, cedar, rego, vm) = (get("aos"), get("cedar"), get("rego"), get("rego-vm"));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            opt(aos),
            opt(cedar),
            opt(rego),
            opt(vm),
            ratio(cedar, aos),
            ratio(rego, aos),
            ratio(vm, aos)
        );
    }
    println!("\n### snapshot verify (criterion median)\n");
    println!("| policies | verify |");
    println!("|---:|---:|");
    for n in [10, 1000] {
        println!("| {n} | {} |", opt(median_ns(&dir.join("verify").join("snapshot").join(n.to_string()))));
    }
}

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("criterion")
}

fn median_ns(bench: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(bench.join("new").join("estimates.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

fn opt(ns: Option<f64>) -> String {
    ns.map_or_else(|| "—".to_owned(), fmt_ns)
}

fn ratio(other: Option<f64>, aos: Option<f64>) -> String {
    match (other, aos) {
        (Some(o), Some(a)) if a > 0.0 => format!("{:.0}×", o / a),
        _ => "—".to_owned(),
    }
}
