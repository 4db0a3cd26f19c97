//! Test-only fault injection on the snapshot watch, compiled into debug
//! builds only (release builds push what they sign, nothing else).
//!
//! When `<data-dir>/fault-inject-snapshot` names a fault, the next push is
//! altered the way an attacker or a broken node might alter it, so the
//! real-process tests can prove the agent NACKs each kind and that the NACK
//! reaches `aosctl agent list`:
//! - `tamper`: one payload byte flipped after signing;
//! - `unsigned`: the signature stripped;
//! - `wrong-key`: signed with a key no one trusts;
//! - `other-tenant`: a correctly signed snapshot naming another tenant;
//! - `rollback`: a correctly signed snapshot at the version the agent holds.

use aos_core::PolicySnapshot;
use aos_core::snapshot::{Envelope, SnapshotSigner};

use crate::node::Node;

/// File naming the fault, in the node's data directory.
pub const FAULT_FILE: &str = "fault-inject-snapshot";

/// The push to send instead of `envelope`, if a fault is configured.
pub fn apply(node: &Node, tenant: &str, agent_version: u64, envelope: Vec<u8>) -> Vec<u8> {
    let Ok(fault) = std::fs::read_to_string(node.data_dir().join(FAULT_FILE)) else {
        return envelope;
    };
    let fault = fault.trim();
    tracing::warn!(message = "TEST FAULT INJECTED into a snapshot push", fault, tenant);
    let resign = |edit: &dyn Fn(&mut PolicySnapshot), signer: Option<&SnapshotSigner>| -> Option<Vec<u8>> {
        let (built, active) = node.state().read(|s| {
            (
                s.0.issued_snapshot(tenant, node.max_staleness_ms()),
                s.0.signing_keys().active().map(str::to_owned),
            )
        });
        let mut snapshot = built.ok()?;
        edit(&mut snapshot);
        let signer = match signer {
            Some(s) => s,
            None => node.keys().signer_for(active.as_deref()).ok()?,
        };
        aos_core::sign(&snapshot, signer).ok()
    };
    let altered = match fault {
        "tamper" => {
            let mut bytes = envelope.clone();
            if let Some(last) = bytes.last_mut() {
                *last ^= 0x01;
            }
            Some(bytes)
        }
        "unsigned" => Envelope::decode(&envelope).ok().map(|mut e| {
            e.key_id = None;
            e.signature = None;
            e.encode()
        }),
        "wrong-key" => SnapshotSigner::from_secret_bytes(&[0x77; 32])
            .ok()
            .and_then(|stranger| resign(&|_| {}, Some(&stranger))),
        "other-tenant" => resign(&|s| s.tenant_id = format!("{}-other", s.tenant_id), None),
        "rollback" => resign(&|s| s.version = agent_version, None),
        _ => None,
    };
    altered.unwrap_or(envelope)
}
