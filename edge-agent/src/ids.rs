//! Random identifiers and the wall clock, the agent's only sources of
//! non-determinism (the evaluator itself reads neither).

/// `prefix-` followed by 16 random bytes in hex. Falls back to the clock
/// and a process-wide counter if the OS has no randomness to give, so an
/// id is never empty or repeated within a process.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
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
