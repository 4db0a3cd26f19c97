//! Random identifiers and the wall clock, the agent's only sources of
//! non-determinism (the evaluator itself reads neither).

use std::cell::RefCell;

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

thread_local! {
    /// A ChaCha12 stream per thread, seeded from the OS on first use: a step
    /// draws two or three ids, and a getrandom syscall for each was 2 % of
    /// the agent's CPU per step (benches/README.md). `None` until seeded, or
    /// when the OS had no randomness to give.
    static ID_STREAM: RefCell<Option<ChaCha12Rng>> = const { RefCell::new(None) };
}

/// 16 bytes from this thread's seeded stream; `None` if the OS cannot seed
/// it.
fn random_bytes() -> Option<[u8; 16]> {
    ID_STREAM.with(|cell| {
        let mut stream = cell.try_borrow_mut().ok()?;
        if stream.is_none() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).ok()?;
            *stream = Some(ChaCha12Rng::from_seed(seed));
        }
        let mut bytes = [0u8; 16];
        stream.as_mut()?.fill_bytes(&mut bytes);
        Some(bytes)
    })
}

/// `prefix-` followed by 16 random bytes in hex (a cryptographically secure
/// stream, so ids cannot be guessed from others). Falls back to the clock
/// and a process-wide counter if the OS has no randomness to give, so an
/// id is never empty or repeated within a process.
pub fn random_id(prefix: &str) -> String {
    if let Some(bytes) = random_bytes() {
        return format!("{prefix}-{}", hex::encode(bytes));
    }
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-t{}-{n}", now_ms())
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::random_id;

    #[test]
    fn ids_are_prefixed_hex_and_never_repeat_within_or_across_threads() {
        let here: Vec<String> = (0..2_000).map(|_| random_id("rec")).collect();
        let there = std::thread::spawn(|| (0..2_000).map(|_| random_id("rec")).collect::<Vec<_>>())
            .join()
            .unwrap_or_default();
        assert_eq!(there.len(), 2_000, "the other thread drew its ids");
        let mut seen = HashSet::new();
        for id in here.iter().chain(&there) {
            let hex = id.strip_prefix("rec-").unwrap_or_default();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert!(seen.insert(id.clone()), "{id} drawn twice");
        }
    }
}
