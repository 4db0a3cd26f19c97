//! Join tokens, agent registration and snapshot ACK/NACK.

use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

const HOUR: u64 = 3_600_000;

fn token_cmd(h: &Harness, tenant: &str, id: &str, n: u64) -> Command {
    Command::CreateJoinToken {
        tenant_id: tenant.into(),
        token_id: id.into(),
        secret_hash: secret_hash(n),
        expires_at_ms: h.now() + HOUR,
    }
}

fn register(tenant: &str, agent: &str, token: &str, n: u64) -> Command {
    Command::RegisterEdgeAgent {
        tenant_id: tenant.into(),
        agent_id: agent.into(),
        name: format!("{agent} host"),
        token_id: token.into(),
        cert_fingerprint: secret_hash(1000 + n),
    }
}

#[test]
fn a_tenant_admin_creates_a_token_and_agents_join_with_it() {
    let mut h = Harness::with_tenants();
    let cmd = token_cmd(&h, ACME, "jt-1", 1);
    let applied = h.ok(&admin(ACME), cmd);
    assert!(applied.detail.get("secret_hash").is_none(), "the hash never leaves the state");
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::JoinTokenCreated);
    assert!(!h.state.audit().last().unwrap().after.as_ref().unwrap().to_string().contains(&secret_hash(1)));

    h.ok(&operator(), register(ACME, "ea-1", "jt-1", 1));
    h.ok(&operator(), register(ACME, "ea-2", "jt-1", 2));
    let agents = h.state.edge_agents();
    assert_eq!(agents.agents(Some(ACME)).count(), 2);
    assert_eq!(agents.agents(Some(GLOBEX)).count(), 0);
    assert_eq!(agents.agent_by_fingerprint(&secret_hash(1001)).unwrap().agent_id, "ea-1");
    assert_eq!(agents.token("jt-1").unwrap().uses, 2);
    assert_eq!(agents.token_by_hash(&secret_hash(1)).unwrap().token_id, "jt-1");
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::EdgeAgentJoined);
}

#[test]
fn registration_rechecks_the_token_at_apply_time() {
    let mut h = Harness::with_tenants();
    let cmd = token_cmd(&h, ACME, "jt-1", 1);
    h.ok(&admin(ACME), cmd);
    // Another tenant's token cannot register an agent for it.
    h.rejected(&operator(), register(GLOBEX, "ea-x", "jt-1", 1), RejectionCode::Forbidden);
    h.rejected(&operator(), register(ACME, "ea-x", "jt-nope", 1), RejectionCode::Forbidden);
    // Revoked: no more joins; the revocation is the tenant's business.
    h.rejected(
        &admin(GLOBEX),
        Command::RevokeJoinToken { token_id: "jt-1".into(), reason: "x".into() },
        RejectionCode::Forbidden,
    );
    h.ok(&admin(ACME), Command::RevokeJoinToken { token_id: "jt-1".into(), reason: "leaked".into() });
    let r = h.rejected(&operator(), register(ACME, "ea-x", "jt-1", 1), RejectionCode::Forbidden);
    assert!(r.message.contains("revoked"), "{}", r.message);
    // Expired.
    let cmd = Command::CreateJoinToken {
        tenant_id: ACME.into(),
        token_id: "jt-short".into(),
        secret_hash: secret_hash(2),
        expires_at_ms: h.now() + 1_500,
    };
    h.ok(&admin(ACME), cmd);
    h.ok(
        &admin(ACME),
        Command::CreateActor {
            tenant_id: ACME.into(),
            actor_id: "filler".into(),
            display_name: "time passes".into(),
            role: aos_core::policy::ActorRole::Auditor,
        },
    );
    let r = h.rejected(&operator(), register(ACME, "ea-late", "jt-short", 3), RejectionCode::Forbidden);
    assert!(r.message.contains("expired"), "{}", r.message);
    assert_eq!(h.state.edge_agents().agents(None).count(), 0);
}

#[test]
fn bad_tokens_and_duplicates_are_refused() {
    let mut h = Harness::with_tenants();
    let too_long = Command::CreateJoinToken {
        tenant_id: ACME.into(),
        token_id: "jt-1".into(),
        secret_hash: secret_hash(1),
        expires_at_ms: h.now() + 31 * 24 * HOUR,
    };
    h.rejected(&admin(ACME), too_long, RejectionCode::InvalidInput);
    let bad_hash = Command::CreateJoinToken {
        tenant_id: ACME.into(),
        token_id: "jt-1".into(),
        secret_hash: "nope".into(),
        expires_at_ms: h.now() + HOUR,
    };
    h.rejected(&admin(ACME), bad_hash, RejectionCode::InvalidInput);
    h.rejected(&sre(ACME), token_cmd(&h, ACME, "jt-1", 1), RejectionCode::Forbidden);
    h.ok(&admin(ACME), token_cmd(&h, ACME, "jt-1", 1));
    h.rejected(&admin(ACME), token_cmd(&h, ACME, "jt-1", 2), RejectionCode::Conflict);
    h.rejected(&admin(ACME), token_cmd(&h, ACME, "jt-2", 1), RejectionCode::Conflict);
    h.ok(&operator(), register(ACME, "ea-1", "jt-1", 1));
    h.rejected(&operator(), register(ACME, "ea-1", "jt-1", 2), RejectionCode::Conflict);
    h.rejected(&operator(), register(ACME, "ea-2", "jt-1", 1), RejectionCode::Conflict);
    // Only the control plane itself registers agents.
    h.rejected(&admin(ACME), register(ACME, "ea-3", "jt-1", 3), RejectionCode::Forbidden);
}

#[test]
fn acks_and_nacks_are_recorded_and_audited() {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), token_cmd(&h, ACME, "jt-1", 1));
    h.ok(&operator(), register(ACME, "ea-1", "jt-1", 1));
    let sync = |version, nack: Option<&str>| Command::RecordAgentSync {
        agent_id: "ea-1".into(),
        version,
        governance_version: None,
        nack_reason: nack.map(str::to_owned),
    };
    h.ok(&operator(), sync(3, None));
    h.ok(&operator(), sync(2, None));
    assert_eq!(h.state.edge_agents().agent("ea-1").unwrap().acked_version, Some(3), "never goes back");
    h.ok(&operator(), sync(4, Some("signature does not verify")));
    let agent = h.state.edge_agents().agent("ea-1").unwrap();
    assert_eq!(agent.acked_version, Some(3));
    assert_eq!(
        agent.last_nack.as_ref().map(|n| (n.version, n.reason.as_str())),
        Some((4, "signature does not verify"))
    );
    let entry = h.state.audit().last().unwrap();
    assert_eq!((entry.action, entry.tenant_id.as_deref()), (AuditAction::SnapshotNacked, Some(ACME)));
    assert_eq!(h.state.edge_agents().nacking().count(), 1, "NACK of 4 is newer than the ACK of 3");
    h.ok(&operator(), sync(5, None));
    assert_eq!(h.state.edge_agents().nacking().count(), 0, "a later ACK clears it");
    h.rejected(
        &operator(),
        Command::RecordAgentSync {
            agent_id: "ea-9".into(),
            version: 1,
            governance_version: None,
            nack_reason: None,
        },
        RejectionCode::NotFound,
    );
}

#[test]
fn a_batch_of_acks_is_one_entry_scoped_to_its_tenant() {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), token_cmd(&h, ACME, "jt-1", 1));
    h.ok(&admin(GLOBEX), token_cmd(&h, GLOBEX, "jt-2", 2));
    h.ok(&operator(), register(ACME, "ea-1", "jt-1", 1));
    h.ok(&operator(), register(ACME, "ea-2", "jt-1", 2));
    h.ok(&operator(), register(GLOBEX, "eg-1", "jt-2", 3));
    let ack = |agent: &str, version, governance: Option<u64>| crate::AgentAck {
        agent_id: agent.into(),
        version,
        governance_version: governance,
    };
    let batch = |tenant: &str, acks| Command::RecordAgentAcks { tenant_id: tenant.into(), acks };
    let before = h.state.audit().len();
    let applied = h.ok(
        &operator(),
        batch(ACME, vec![ack("ea-1", 4, Some(7)), ack("ea-2", 0, Some(7)), ack("ea-gone", 1, None)]),
    );
    assert_eq!(h.state.audit().len(), before + 1, "one ledger entry for the batch");
    let entry = h.state.audit().last().unwrap();
    assert_eq!((entry.action, entry.tenant_id.as_deref()), (AuditAction::SnapshotAcked, Some(ACME)));
    assert!(entry.detail.contains("2 edge agents") && entry.detail.contains("ea-gone"), "{}", entry.detail);
    assert_eq!(applied.detail["acks"].as_array().map(Vec::len), Some(2));
    let agents = h.state.edge_agents();
    let one = agents.agent("ea-1").unwrap();
    assert_eq!((one.acked_version, one.acked_governance_version), (Some(4), Some(7)));
    let two = agents.agent("ea-2").unwrap();
    assert_eq!((two.acked_version, two.acked_governance_version), (None, Some(7)));
    // Late ACKs never lower what was recorded.
    h.ok(&operator(), batch(ACME, vec![ack("ea-1", 2, Some(5))]));
    let one = h.state.edge_agents().agent("ea-1").unwrap();
    assert_eq!((one.acked_version, one.acked_governance_version), (Some(4), Some(7)));

    // Another tenant's agent refuses the whole batch, nothing changes.
    h.rejected(
        &operator(),
        batch(ACME, vec![ack("ea-2", 9, Some(9)), ack("eg-1", 9, Some(9))]),
        RejectionCode::Forbidden,
    );
    assert_eq!(h.state.edge_agents().agent("ea-2").unwrap().acked_version, None);
    assert_eq!(h.state.edge_agents().agent("eg-1").unwrap().acked_version, None);
    // Empty and oversized batches are malformed; tenant members may not record ACKs.
    h.rejected(&operator(), batch(ACME, Vec::new()), RejectionCode::InvalidInput);
    let huge = (0..=crate::MAX_ACKS_PER_BATCH).map(|_| ack("ea-1", 1, None)).collect();
    h.rejected(&operator(), batch(ACME, huge), RejectionCode::InvalidInput);
    h.rejected(&admin(ACME), batch(ACME, vec![ack("ea-1", 5, None)]), RejectionCode::Forbidden);
}

#[test]
fn connections_are_tracked_and_a_late_disconnect_from_an_old_node_is_ignored() {
    let mut h = Harness::with_tenants();
    let cmd = token_cmd(&h, ACME, "jt-1", 1);
    h.ok(&admin(ACME), cmd);
    h.ok(&operator(), register(ACME, "ea-1", "jt-1", 1));
    let connection =
        |node_id, connected| Command::RecordAgentConnection { agent_id: "ea-1".into(), node_id, connected };
    h.ok(&operator(), connection(1, true));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::EdgeAgentConnected);
    // The agent moved to node 2 before node 1 noticed it had gone.
    h.ok(&operator(), connection(2, true));
    h.ok(&operator(), connection(1, false));
    let agent = h.state.edge_agents().agent("ea-1").unwrap();
    assert_eq!(agent.connected_node, Some(2));
    h.ok(&operator(), connection(2, false));
    let agent = h.state.edge_agents().agent("ea-1").unwrap();
    assert_eq!(agent.connected_node, None);
    assert!(agent.last_seen_ms.is_some());
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::EdgeAgentDisconnected);
    // Only the control plane itself reports connections.
    h.rejected(&admin(ACME), connection(1, true), RejectionCode::Forbidden);
    h.rejected(
        &operator(),
        Command::RecordAgentConnection { agent_id: "ea-x".into(), node_id: 1, connected: true },
        RejectionCode::NotFound,
    );
}
