//! Helpers for unit tests: build verified snapshots from YAML snippets.

use crate::counters::{CounterKey, CounterWindow, Metric};
use crate::document::{DocumentFormat, parse_document};
use crate::policy::{PolicyOverride, PolicyStatus};
use crate::snapshot::{
    PolicySnapshot, SnapshotSigner, TrustedKeys, VerifiedSnapshot, VerifyOptions, sign, verify,
};
use std::collections::BTreeMap;

pub const TENANT: &str = "tenant-a";
pub const NOW_MS: u64 = 1_000_000;

pub fn signer() -> SnapshotSigner {
    SnapshotSigner::from_secret_bytes(&[7u8; 32]).unwrap()
}

pub fn trusted() -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.insert(signer().verifying_key());
    keys
}

/// Parses `policies_yaml` (the items of a `policies:` list), marks every
/// policy ACTIVE, and returns a signed-then-verified snapshot.
pub fn snapshot(version: u64, policies_yaml: &str) -> VerifiedSnapshot {
    snapshot_with(version, policies_yaml, Vec::new())
}

pub fn snapshot_with(version: u64, policies_yaml: &str, overrides: Vec<PolicyOverride>) -> VerifiedSnapshot {
    let text = format!("api_version: aos/v1\npolicies:\n{policies_yaml}");
    let doc = parse_document(&text, DocumentFormat::Yaml).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let policies = doc
        .policies
        .into_iter()
        .map(|mut p| {
            p.status = PolicyStatus::Active;
            p
        })
        .collect();
    let snap = PolicySnapshot::new(TENANT, version, 0, NOW_MS * 10, policies, overrides, Vec::new()).unwrap();
    let bytes = sign(&snap, &signer()).unwrap();
    verify(
        &bytes,
        &trusted(),
        &VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW_MS },
    )
    .unwrap()
}

pub fn counters(entries: &[(Metric, CounterWindow, u64)]) -> BTreeMap<CounterKey, u64> {
    entries
        .iter()
        .map(|(metric, window, value)| (CounterKey { metric: *metric, window: *window }, *value))
        .collect()
}

/// Every counter `snapshot` needs, at zero, then `entries` on top.
pub fn counters_for(
    snapshot: &VerifiedSnapshot,
    entries: &[(Metric, CounterWindow, u64)],
) -> BTreeMap<CounterKey, u64> {
    let mut map: BTreeMap<CounterKey, u64> = snapshot.required_counters().iter().map(|k| (*k, 0)).collect();
    map.extend(counters(entries));
    map
}
