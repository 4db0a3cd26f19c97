//! Boot-time spine checks of a control-plane node (INV-004, GAP-067 on the
//! control-plane side).
//!
//! A node runs them once, when it opens its store — except `active_key`,
//! which is checked on every use: a node restarted with the wrong key files
//! only learns which key the cluster signs with as it replays its log. A
//! node that fails any of them keeps taking part in Raft — consensus safety does not depend on
//! them, and a cluster must keep its quorum while one node waits for an
//! operator — but it serves nothing from its own entry points: the admin
//! API answers 503 `BOOT_FAILED` (all but `/health` and `/metrics`), the
//! edge-agent gateway answers `UNAVAILABLE` (agents move to another node),
//! and it issues no snapshots. `/health` lists every check and why it
//! failed, so the operator at 3 a.m. reads the cause there, not in a log.
//!
//! | Check | Fails when |
//! |---|---|
//! | `data_dir` | a probe file cannot be written and synced in the data directory |
//! | `audit_chain` | the audit ledger in the state as persisted at open (the last Raft snapshot) does not verify (first bad entry named); entries replayed from the log after it are re-chained as they apply |
//! | `signing_keys` | a held key cannot sign a probe snapshot that then verifies |
//! | `active_key` (live) | the cluster signs with a key this node does not hold |
//! | `cluster_ca` | the gateway's CA cannot issue this node's certificate |

use std::path::Path;

use aos_core::snapshot::{TrustedKeys, VerifyOptions};
use serde_json::{Value, json};

use crate::pki::ClusterCa;
use crate::raft::store::StateReader;
use crate::signing::KeyRing;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpineCheck {
    /// The check's name (see the module table).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// Every check's outcome, from one start of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpineReport {
    checks: Vec<SpineCheck>,
}

/// What the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct SpineInputs<'a> {
    /// The node's data directory.
    pub data_dir: &'a Path,
    /// The applied state, as persisted locally.
    pub state: &'a StateReader,
    /// The signing keys this node holds.
    pub keys: &'a KeyRing,
    /// The cluster CA, when the node serves edge agents.
    pub ca: Option<&'a ClusterCa>,
    /// Names for the node's gateway certificate.
    pub tls_names: &'a [String],
    /// Unix milliseconds now.
    pub now_ms: u64,
}

impl SpineReport {
    /// Runs every check.
    pub fn run(inputs: &SpineInputs<'_>) -> SpineReport {
        let mut checks = vec![
            check("data_dir", data_dir(inputs.data_dir)),
            check("audit_chain", audit_chain(inputs.state)),
            check("signing_keys", signing_keys(inputs)),
        ];
        if let Some(ca) = inputs.ca {
            checks.push(check("cluster_ca", cluster_ca(ca, inputs)));
        }
        SpineReport { checks }
    }

    /// A report made of the given outcomes (tests, and nodes started
    /// without checks).
    pub fn from_checks(checks: Vec<SpineCheck>) -> SpineReport {
        SpineReport { checks }
    }

    /// This report with a live check appended.
    pub fn with(&self, live: SpineCheck) -> SpineReport {
        let mut checks = self.checks.clone();
        checks.push(live);
        SpineReport { checks }
    }

    /// Whether every check passed.
    pub fn validated(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The checks, in the order they ran.
    pub fn checks(&self) -> &[SpineCheck] {
        &self.checks
    }

    /// `name: detail` of every failed check, `; `-separated.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The report as `/health` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "validated": self.validated(),
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name,
                "status": if c.ok { "ok" } else { "failed" },
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

fn check(name: &'static str, outcome: Result<String, String>) -> SpineCheck {
    match outcome {
        Ok(detail) => SpineCheck { name, ok: true, detail },
        Err(detail) => SpineCheck { name, ok: false, detail },
    }
}

fn data_dir(dir: &Path) -> Result<String, String> {
    use std::io::Write;
    let probe = dir.join(".spine-probe");
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) => Ok(format!("{} writable", dir.display())),
        Err(e) => Err(format!("cannot write and sync a file in {}: {e}", dir.display())),
    }
}

fn audit_chain(state: &StateReader) -> Result<String, String> {
    state.read(|s| {
        let ledger = s.0.audit();
        match ledger.verify() {
            Ok(()) => Ok(format!("{} entries verified", ledger.len())),
            Err(e) => Err(format!("the local audit ledger does not verify: {e}")),
        }
    })
}

fn signing_keys(inputs: &SpineInputs<'_>) -> Result<String, String> {
    for signer in inputs.keys.signers() {
        let probe = aos_core::PolicySnapshot::new(
            "spine-probe",
            1,
            inputs.now_ms,
            inputs.now_ms.saturating_add(60_000),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
        .map_err(|e| format!("cannot build the probe snapshot: {e}"))?;
        let bytes = aos_core::sign(&probe, signer)
            .map_err(|e| format!("key {} cannot sign: {e}", signer.key_id().as_str()))?;
        let mut trusted = TrustedKeys::new();
        trusted.insert(signer.verifying_key());
        let options =
            VerifyOptions { tenant_id: "spine-probe", last_accepted_version: None, now_ms: inputs.now_ms };
        aos_core::verify(&bytes, &trusted, &options).map_err(|e| {
            format!("a probe signed with key {} does not verify: {e}", signer.key_id().as_str())
        })?;
    }
    Ok(format!("{} key(s) sign and verify", inputs.keys.key_ids().count()))
}

/// Whether the key the replicated state says signs snapshots (if any) is
/// one this node holds: the allocation-free test every request runs.
pub fn holds_active_key(state: &StateReader, keys: &KeyRing) -> bool {
    state.read(|s| s.0.signing_keys().active().is_none_or(|active| keys.holds(active)))
}

/// The live check: the key the replicated state says signs snapshots is
/// one this node holds.
pub fn active_key(state: &StateReader, keys: &KeyRing) -> SpineCheck {
    let active = state.read(|s| s.0.signing_keys().active().map(str::to_owned));
    let held: Vec<&str> = keys.key_ids().collect();
    check(
        "active_key",
        match active {
            Some(active) if !keys.holds(&active) => Err(format!(
                "the cluster signs snapshots with key {active}, which this node does not hold (it holds {}); \
                 give it that key (signing.key, --signing-key-file or AOS_SIGNING_KEY) and restart",
                held.join(", ")
            )),
            Some(active) => Ok(format!("holds the active key {active}")),
            None => Ok("no active key replicated yet".to_owned()),
        },
    )
}

fn cluster_ca(ca: &ClusterCa, inputs: &SpineInputs<'_>) -> Result<String, String> {
    let now_secs = i64::try_from(inputs.now_ms / 1000).unwrap_or(0);
    ca.issue_server(inputs.tls_names, now_secs)
        .map(|_| format!("issues this node's gateway certificate (CA sha256 {})", ca.sha256_hex()))
        .map_err(|e| format!("the cluster CA cannot issue this node's certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_validated_only_when_every_check_passed_and_names_the_failures() {
        let ok = SpineCheck { name: "data_dir", ok: true, detail: "fine".to_owned() };
        let bad = SpineCheck { name: "signing_keys", ok: false, detail: "key k1 not held".to_owned() };
        let good = SpineReport::from_checks(vec![ok.clone()]);
        assert!(good.validated());
        assert_eq!(good.failures(), "");
        let failed = SpineReport::from_checks(vec![ok, bad]);
        assert!(!failed.validated());
        assert_eq!(failed.failures(), "signing_keys: key k1 not held");
        assert_eq!(failed.to_json()["checks"][1]["status"], "failed");
        assert_eq!(failed.to_json()["validated"], false);
    }

    #[test]
    fn an_unwritable_data_dir_fails_with_the_path() {
        let missing = Path::new("/nonexistent/aos-spine-test");
        let err = data_dir(missing).unwrap_err();
        assert!(err.contains("/nonexistent/aos-spine-test"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(data_dir(dir.path()).is_ok());
        assert!(!dir.path().join(".spine-probe").exists());
    }
}
