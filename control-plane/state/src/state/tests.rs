//! `ControlState::apply` end to end: records, authorisation, idempotency,
//! snapshot versions, snapshots, serialisation.

use aos_core::policy::{ActorRole, PolicyStatus};
use aos_core::snapshot::{SnapshotSigner, TrustedKeys, VerifyOptions};
use serde_json::json;

use crate::test_support::*;
use crate::{
    ActorRef, AuditAction, AuditOutcome, Command, CommandResult, ControlState, RejectionCode, StateError,
};

fn project(tenant: &str, id: &str) -> Command {
    Command::CreateProject { tenant_id: tenant.into(), project_id: id.into(), name: format!("Project {id}") }
}

fn actor_cmd(tenant: &str, id: &str, role: ActorRole) -> Command {
    Command::CreateActor { tenant_id: tenant.into(), actor_id: id.into(), display_name: "Alice".into(), role }
}

fn key(tenant: Option<&str>, id: &str, n: u64) -> Command {
    Command::CreateApiKey {
        tenant_id: tenant.map(str::to_owned),
        key_id: id.into(),
        name: format!("key {id}"),
        role: ActorRole::Admin,
        secret_hash: secret_hash(n),
    }
}

fn apply(tenant: &str, policy: aos_core::policy::Policy) -> Command {
    Command::ApplyPolicy { tenant_id: tenant.into(), policy }
}

fn transition(tenant: &str, policy_id: &str, to: PolicyStatus, reason: Option<&str>) -> Command {
    Command::TransitionPolicy {
        tenant_id: tenant.into(),
        policy_id: policy_id.into(),
        to,
        reason: reason.map(str::to_owned),
    }
}

fn grant_cmd(tenant: &str, o: aos_core::policy::PolicyOverride) -> Command {
    Command::GrantOverride { tenant_id: tenant.into(), policy_override: o }
}

fn last_entry(h: &Harness) -> &crate::AuditEntry {
    h.state.audit().last().unwrap()
}

// --- tenants, projects, actors -------------------------------------------

#[test]
fn an_operator_creates_tenants() {
    let mut h = Harness::new();
    let applied = h.ok(&operator(), Command::CreateTenant { tenant_id: ACME.into(), name: "Acme".into() });
    assert_eq!(applied.audit_seq, 1);
    assert_eq!(applied.tenant_snapshot_version, None);
    assert_eq!(applied.detail["tenant_id"], ACME);
    let tenant = h.state.tenant(ACME).unwrap();
    assert_eq!((tenant.name.as_str(), tenant.created_by.as_str()), ("Acme", "bootstrap"));
    assert_eq!((tenant.created_at_ms, tenant.snapshot_version), (T0 + 1_000, 0));
    let entry = last_entry(&h);
    assert_eq!(entry.action, AuditAction::TenantCreated);
    assert_eq!((entry.tenant_id.as_deref(), entry.target.as_str()), (Some(ACME), "tenants/acme"));
    assert_eq!(entry.after.as_ref().unwrap()["name"], "Acme");
    assert_eq!((entry.log_index, entry.at_ms, entry.request_id.as_str()), (1, T0 + 1_000, "req-1"));
    assert_eq!(entry.actor, operator());
    assert_eq!(h.state.tenants().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), [ACME]);
}

#[test]
fn a_tenant_admin_creates_projects_and_actors() {
    let mut h = Harness::with_tenants();
    let applied = h.ok(&admin(ACME), project(ACME, "checkout"));
    assert_eq!(applied.detail["project_id"], "checkout");
    assert_eq!(applied.tenant_snapshot_version, None);
    assert_eq!(last_entry(&h).action, AuditAction::ProjectCreated);
    assert_eq!(last_entry(&h).target, "tenants/acme/projects/checkout");

    h.ok(&admin(ACME), actor_cmd(ACME, "alice", ActorRole::Sre));
    assert_eq!(last_entry(&h).action, AuditAction::ActorCreated);
    let alice = h.state.actors(ACME).next().unwrap();
    assert_eq!(
        (alice.actor_id.as_str(), alice.role, alice.created_by.as_str()),
        ("alice", ActorRole::Sre, "acme-admin")
    );
    assert_eq!(h.state.projects(ACME).map(|p| p.project_id.as_str()).collect::<Vec<_>>(), ["checkout"]);
    assert_eq!(h.state.projects(GLOBEX).count(), 0);
    assert_eq!(h.state.projects("initech").count(), 0);
    assert_eq!(h.state.snapshot_version(ACME), 0);
}

#[test]
fn duplicate_ids_conflict() {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), project(ACME, "p1"));
    h.ok(&admin(ACME), actor_cmd(ACME, "alice", ActorRole::Sre));
    h.ok(&admin(ACME), key(Some(ACME), "k1", 1));

    let r = h.rejected(
        &operator(),
        Command::CreateTenant { tenant_id: ACME.into(), name: "Again".into() },
        RejectionCode::Conflict,
    );
    assert_eq!(r.message, "tenant `acme` already exists");
    h.rejected(&admin(ACME), project(ACME, "p1"), RejectionCode::Conflict);
    h.rejected(&admin(ACME), actor_cmd(ACME, "alice", ActorRole::Admin), RejectionCode::Conflict);
    h.rejected(&admin(ACME), key(Some(ACME), "k1", 2), RejectionCode::Conflict);
    let r = h.rejected(&admin(GLOBEX), key(Some(GLOBEX), "k2", 1), RejectionCode::Conflict);
    assert!(!r.message.contains("k1") && !r.message.contains(&secret_hash(1)), "{}", r.message);
    // The same project id in another tenant is fine.
    h.ok(&admin(GLOBEX), project(GLOBEX, "p1"));
}

#[test]
fn malformed_records_are_invalid_input() {
    let mut h = Harness::with_tenants();
    let r = h.rejected(
        &operator(),
        Command::CreateTenant { tenant_id: "acme corp".into(), name: " ".into() },
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["tenant_id", "name"]);
    let r = h.rejected(&admin(ACME), project(ACME, ""), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "project_id");
    let r = h.rejected(
        &admin(ACME),
        Command::CreateActor {
            tenant_id: ACME.into(),
            actor_id: "bob".into(),
            display_name: String::new(),
            role: ActorRole::Sre,
        },
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors[0].path, "display_name");
    let mut bad_hash = key(Some(ACME), "k1", 1);
    if let Command::CreateApiKey { secret_hash, .. } = &mut bad_hash {
        *secret_hash = "hunter2".into();
    }
    let r = h.rejected(&admin(ACME), bad_hash, RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "secret_hash");
    assert!(!r.message.contains("hunter2"));
    assert!(!h.state.audit().last().unwrap().detail.contains("hunter2"));
}

#[test]
fn unknown_tenants_are_not_found() {
    let mut h = Harness::with_tenants();
    for command in [
        project("initech", "p1"),
        actor_cmd("initech", "a", ActorRole::Sre),
        key(Some("initech"), "k1", 1),
        apply("initech", policy("pol-a", 1)),
        transition("initech", "pol-a", PolicyStatus::Active, None),
        grant_cmd("initech", grant("o1", "pol-a", &operator(), h.now())),
        Command::RevokeOverride { tenant_id: "initech".into(), override_id: "o1".into(), reason: "x".into() },
    ] {
        let r = h.rejected(&operator(), command, RejectionCode::NotFound);
        assert_eq!(r.message, "unknown tenant `initech`");
    }
}

// --- API keys ---------------------------------------------------------------

#[test]
fn api_keys_are_found_by_hash_until_revoked() {
    let mut h = Harness::with_tenants();
    let applied = h.ok(&admin(ACME), key(Some(ACME), "k-acme", 1));
    assert_eq!(applied.detail["key_id"], "k-acme");
    assert!(applied.detail.get("secret_hash").is_none());
    h.ok(&operator(), key(None, "k-ops", 2));
    assert_eq!(last_entry(&h).tenant_id, None);

    let found = h.state.api_key_by_hash(&secret_hash(1)).unwrap();
    assert_eq!((found.key_id.as_str(), found.tenant_id.as_deref()), ("k-acme", Some(ACME)));
    assert_eq!(h.state.api_key_by_hash(&secret_hash(2)).unwrap().tenant_id, None);
    assert!(h.state.api_key_by_hash(&secret_hash(3)).is_none());
    assert_eq!(h.state.api_keys(Some(ACME)).count(), 1);
    assert_eq!(h.state.api_keys(None).map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["k-ops"]);

    h.ok(&admin(ACME), Command::RevokeApiKey { key_id: "k-acme".into(), reason: "leaked".into() });
    let entry = last_entry(&h);
    assert_eq!((entry.action, entry.tenant_id.as_deref()), (AuditAction::ApiKeyRevoked, Some(ACME)));
    assert!(h.state.api_key_by_hash(&secret_hash(1)).is_none(), "a revoked key does not authenticate");
    assert!(!h.state.api_key("k-acme").unwrap().is_active());
    h.rejected(
        &admin(ACME),
        Command::RevokeApiKey { key_id: "k-acme".into(), reason: "again".into() },
        RejectionCode::Conflict,
    );
    h.rejected(
        &admin(ACME),
        Command::RevokeApiKey { key_id: "k-nope".into(), reason: "x".into() },
        RejectionCode::NotFound,
    );
    let r = h.rejected(
        &admin(ACME),
        Command::RevokeApiKey { key_id: "k-ops".into(), reason: "x".into() },
        RejectionCode::Forbidden,
    );
    assert!(r.message.contains("cluster-operator"), "{}", r.message);
    // A revoked key's secret stays registered: it cannot be reused.
    h.rejected(&admin(ACME), key(Some(ACME), "k-new", 1), RejectionCode::Conflict);
}

#[test]
fn a_revoked_key_cannot_write_even_if_a_lagging_node_authenticated_it() {
    let mut h = Harness::with_tenants();
    h.ok(
        &admin(ACME),
        Command::CreateApiKey {
            tenant_id: Some(ACME.into()),
            key_id: "k-author".into(),
            name: "ci".into(),
            role: ActorRole::PolicyAuthor,
            secret_hash: secret_hash(7),
        },
    );
    let as_key = ActorRef {
        actor_id: "k-author".into(),
        actor_type: crate::ActorType::ApiKey,
        role: ActorRole::PolicyAuthor,
        tenant_id: Some(ACME.into()),
    };
    h.ok(&as_key, apply(ACME, policy("pol-a", 100)));
    h.ok(&admin(ACME), Command::RevokeApiKey { key_id: "k-author".into(), reason: "leaked".into() });
    // The proposal was authenticated against older state; apply refuses it.
    let r = h.rejected(&as_key, apply(ACME, policy("pol-b", 100)), RejectionCode::Forbidden);
    assert!(r.message.contains("revoked"), "{}", r.message);
    let ghost = ActorRef { actor_id: "k-ghost".into(), ..as_key.clone() };
    h.rejected(&ghost, apply(ACME, policy("pol-c", 100)), RejectionCode::Forbidden);
    assert_eq!(last_entry(&h).action, AuditAction::AccessDenied);
}

#[test]
fn secret_hashes_never_reach_the_ledger() {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), key(Some(ACME), "k1", 0xfeed));
    h.ok(&operator(), key(None, "k2", 0xbeef));
    h.ok(&admin(ACME), Command::RevokeApiKey { key_id: "k1".into(), reason: "rotated".into() });
    h.rejected(&admin(ACME), key(Some(ACME), "k3", 0xfeed), RejectionCode::Conflict);
    let ledger = serde_json::to_string(h.state.audit()).unwrap();
    for n in [0xfeed, 0xbeef] {
        assert!(!ledger.contains(&secret_hash(n)), "secret hash {n:x} leaked into the ledger");
    }
    assert!(ledger.contains("k1") && ledger.contains("k2"));
}

// --- authorisation ------------------------------------------------------

#[test]
fn cross_tenant_proposals_are_forbidden_and_audited() {
    let mut h = Harness::with_tenants();
    h.ok(&author(GLOBEX), apply(GLOBEX, active(policy("pol-g", 10))));
    h.ok(&admin(GLOBEX), key(Some(GLOBEX), "k-g", 9));
    let intruder = admin(ACME);
    for command in [
        project(GLOBEX, "p1"),
        actor_cmd(GLOBEX, "mallory", ActorRole::Admin),
        key(Some(GLOBEX), "k1", 1),
        Command::RevokeApiKey { key_id: "k-g".into(), reason: "x".into() },
        apply(GLOBEX, policy("pol-a", 1)),
        transition(GLOBEX, "pol-g", PolicyStatus::Suspended, Some("x")),
        grant_cmd(GLOBEX, grant("o1", "pol-g", &intruder, h.now())),
        Command::RevokeOverride { tenant_id: GLOBEX.into(), override_id: "o1".into(), reason: "x".into() },
        // Not even to probe for tenants that do not exist.
        project("initech", "p1"),
    ] {
        let r = h.rejected(&intruder, command, RejectionCode::Forbidden);
        assert!(r.message.starts_with("an actor of tenant `acme` may not act on tenant"), "{}", r.message);
        let entry = last_entry(&h);
        assert_eq!(entry.actor, intruder);
        assert_ne!(entry.tenant_id.as_deref(), Some(ACME), "recorded against the targeted tenant");
    }
}

#[test]
fn cluster_actions_need_an_operator_admin() {
    let mut h = Harness::with_tenants();
    let create = || Command::CreateTenant { tenant_id: "initech".into(), name: "Initech".into() };
    let r = h.rejected(&admin(ACME), create(), RejectionCode::Forbidden);
    assert_eq!(r.message, "an actor of tenant `acme` may not perform cluster-operator actions");
    h.rejected(&admin(ACME), key(None, "k-ops", 1), RejectionCode::Forbidden);
    let operator_auditor = ActorRef { role: ActorRole::Auditor, ..operator() };
    let r = h.rejected(&operator_auditor, create(), RejectionCode::Forbidden);
    assert_eq!(r.message, "role `auditor` may not perform cluster-operator actions (admin required)");
    // An operator admin may act inside any tenant.
    h.ok(&operator(), project(ACME, "p1"));
    h.ok(&operator(), apply(GLOBEX, policy("pol-a", 1)));
}

#[test]
fn roles_limit_what_members_may_do() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, active(policy("pol-a", 100))));
    let o = |actor: &ActorRef, h: &Harness| grant_cmd(ACME, grant("o1", "pol-a", actor, h.now()));

    // auditor: nothing.
    let auditor = auditor(ACME);
    for command in [
        project(ACME, "p1"),
        actor_cmd(ACME, "a", ActorRole::Admin),
        key(Some(ACME), "k1", 1),
        apply(ACME, policy("pol-b", 1)),
        transition(ACME, "pol-a", PolicyStatus::Suspended, Some("x")),
        o(&auditor, &h),
    ] {
        let r = h.rejected(&auditor, command, RejectionCode::Forbidden);
        assert!(r.message.starts_with("role `auditor` may not"), "{}", r.message);
    }
    // policy_author: policies only.
    let author = author(ACME);
    for command in [project(ACME, "p1"), key(Some(ACME), "k1", 1), o(&author, &h)] {
        h.rejected(&author, command, RejectionCode::Forbidden);
    }
    h.ok(&author, transition(ACME, "pol-a", PolicyStatus::Suspended, Some("x")));
    h.ok(&author, transition(ACME, "pol-a", PolicyStatus::Active, None));
    // sre: overrides, not policies or records.
    let sre = sre(ACME);
    for command in [apply(ACME, policy("pol-b", 1)), actor_cmd(ACME, "a", ActorRole::Admin)] {
        let r = h.rejected(&sre, command, RejectionCode::Forbidden);
        assert!(r.message.starts_with("role `sre` may not"), "{}", r.message);
    }
    h.ok(&sre, o(&sre, &h));
    // admin: everything in scope.
    let admin = admin(ACME);
    h.ok(&admin, project(ACME, "p1"));
    h.ok(&admin, apply(ACME, policy("pol-b", 1)));
    h.ok(
        &admin,
        Command::RevokeOverride { tenant_id: ACME.into(), override_id: "o1".into(), reason: "done".into() },
    );
}

#[test]
fn denials_recorded_for_the_api_layer_change_nothing_else() {
    let mut h = Harness::with_tenants();
    let before = h.state.clone();
    let applied = h.ok(
        &auditor(ACME),
        Command::RecordDenial {
            tenant_id: Some(GLOBEX.into()),
            action: "POST /v1/tenants/globex/policies".into(),
            target: "tenants/globex/policies".into(),
            reason: "cross-tenant access".into(),
        },
    );
    assert_eq!(applied.tenant_snapshot_version, None);
    assert_eq!(h.state.domain(), before.domain());
    assert_eq!(h.state.audit().len(), before.audit().len() + 1);
    let entry = last_entry(&h);
    assert_eq!((entry.action, entry.outcome), (AuditAction::AccessDenied, AuditOutcome::Rejected));
    assert_eq!(
        (entry.tenant_id.as_deref(), entry.target.as_str()),
        (Some(GLOBEX), "tenants/globex/policies")
    );
    assert!(entry.detail.contains("cross-tenant access"), "{}", entry.detail);
    assert_eq!(entry.actor, auditor(ACME));
}

#[test]
fn proposals_need_a_request_id_and_an_actor_id() {
    let mut h = Harness::with_tenants();
    let mut p = h.proposal(&admin(ACME), project(ACME, "p1"));
    p.request_id.clear();
    let before = h.state.clone();
    for _ in 0..2 {
        let CommandResult::Rejected(r) = h.submit(&p) else { panic!("expected a rejection") };
        assert_eq!((r.code, r.field_errors[0].path.as_str()), (RejectionCode::InvalidInput, "request_id"));
    }
    assert_eq!(h.state.audit().len(), before.audit().len() + 2, "never deduplicated on an empty id");
    assert_eq!(h.state.domain(), before.domain());

    let anonymous = ActorRef { actor_id: String::new(), ..admin(ACME) };
    let r = h.rejected(&anonymous, project(ACME, "p1"), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "actor.actor_id");
}

// --- idempotency ----------------------------------------------------------

#[test]
fn a_replayed_request_returns_the_original_result() {
    let mut h = Harness::with_tenants();
    let p = h.proposal(&author(ACME), apply(ACME, active(policy("pol-a", 100))));
    let first = h.submit(&p);
    let state = h.state.clone();
    let again = h.submit(&p);
    assert_eq!(again, first);
    assert_eq!(h.state.domain(), state.domain());
    assert_eq!(h.state.audit(), state.audit(), "no new audit entry");
    assert_eq!(h.state.policy(ACME, "pol-a").unwrap().latest_version(), 1);
    assert_eq!(h.state.last_applied_index(), state.last_applied_index() + 1);

    // The same id with another command is still the original request.
    let mut other = h.proposal(&author(ACME), apply(ACME, policy("pol-a", 999)));
    other.request_id = p.request_id.clone();
    assert_eq!(h.submit(&other), first);
    assert_eq!(h.state.policy(ACME, "pol-a").unwrap().latest().limits[0].max, Some(100.0));

    // Rejections replay too.
    let bad = h.proposal(&auditor(ACME), project(ACME, "p1"));
    let rejected = h.submit(&bad);
    assert!(!rejected.is_applied());
    let len = h.state.audit().len();
    assert_eq!(h.submit(&bad), rejected);
    assert_eq!(h.state.audit().len(), len);
}

#[test]
fn the_request_log_forgets_the_oldest_ids() {
    let mut h = Harness { state: ControlState::with_request_capacity(2), next_index: 1 };
    let first =
        h.proposal(&operator(), Command::CreateTenant { tenant_id: ACME.into(), name: "Acme".into() });
    h.submit(&first);
    h.ok(&admin(ACME), project(ACME, "p1"));
    assert!(h.state.requests().get(&first.request_id).is_some());
    h.ok(&admin(ACME), project(ACME, "p2"));
    assert_eq!(h.state.requests().len(), 2);
    assert!(h.state.requests().get(&first.request_id).is_none());
    // Forgotten, so it is applied afresh (and refused: the tenant exists).
    let len = h.state.audit().len();
    let CommandResult::Rejected(r) = h.submit(&first) else { panic!("expected a rejection") };
    assert_eq!(r.code, RejectionCode::Conflict);
    assert_eq!(h.state.audit().len(), len + 1);
}

// --- batches (one Raft entry for proposals made together) -----------------

/// Proposals covering every way a proposal can end: applied, refused,
/// replayed by request id, touching a tenant's snapshot.
fn mixed_proposals(h: &Harness) -> Vec<crate::Proposal> {
    let with_id = |id: &str, actor: &ActorRef, command: Command| {
        let mut p = h.proposal(actor, command);
        p.request_id = id.to_owned();
        p
    };
    let create =
        with_id("b-1", &operator(), Command::CreateTenant { tenant_id: "initech".into(), name: "I".into() });
    vec![
        create.clone(),
        with_id("b-2", &admin("initech"), project("initech", "p1")),
        // Refused: an auditor changes nothing.
        with_id("b-3", &auditor(ACME), project(ACME, "p2")),
        // Replayed: the first proposal again, by its request id.
        create,
        with_id("b-4", &author(ACME), apply(ACME, active(policy("pol-a", 100)))),
    ]
}

#[test]
fn a_batch_applies_its_proposals_as_separate_entries_would() {
    let proposals = mixed_proposals(&Harness::with_tenants());

    let mut one_by_one = Harness::with_tenants();
    let separate: Vec<CommandResult> = proposals.iter().map(|p| one_by_one.submit(p)).collect();

    let mut batched = Harness::with_tenants();
    let batch = batched.proposal(&operator(), Command::Batch { proposals: proposals.clone() });
    let before = batched.state.audit().len();
    let result = batched.submit(&batch);
    let results = result.clone().into_batch().expect("a batch answers with its proposals' results");

    assert_eq!(results, separate, "same results, audit seqs included");
    assert_eq!(batched.state.domain(), one_by_one.state.domain());
    assert_eq!(batched.state.requests().get("b-4"), one_by_one.state.requests().get("b-4"));
    assert!(batched.state.requests().get(&batch.request_id).is_none(), "the batch itself is not remembered");
    // One audit entry per proposal that was not a replay, none for the
    // batch; the same entries as one by one but for the log index, which
    // is the batch's.
    let entries = &batched.state.audit().entries()[before..];
    let expected = &one_by_one.state.audit().entries()[before..];
    assert_eq!(entries.len(), 4);
    assert_eq!(expected.len(), 4);
    for (got, want) in entries.iter().zip(expected) {
        assert_eq!(
            (got.seq, &got.request_id, got.action, &got.detail),
            (want.seq, &want.request_id, want.action, &want.detail)
        );
        assert_eq!(got.log_index, batched.next_index - 1);
    }
    assert!(batched.state.audit().verify().is_ok());
    assert_eq!(batched.state.last_applied_index(), batched.next_index - 1);
}

#[test]
fn batches_do_not_nest_and_an_empty_batch_changes_nothing() {
    let mut h = Harness::with_tenants();
    let inner = h.proposal(&admin(ACME), project(ACME, "p1"));
    let mut nested = h.proposal(&admin(ACME), Command::Batch { proposals: vec![inner] });
    nested.request_id = "nested".to_owned();
    let domain = h.state.domain().clone();
    let before = h.state.audit().len();
    let results = h.run(&operator(), Command::Batch { proposals: vec![nested] }).into_batch().unwrap();
    let [CommandResult::Rejected(refused)] = results.as_slice() else {
        panic!("expected one refusal: {results:#?}")
    };
    assert_eq!(refused.code, RejectionCode::InvalidInput);
    assert!(refused.message.contains("cannot be nested"), "{}", refused.message);
    assert_eq!(h.state.domain(), &domain, "the nested proposal was not applied");
    assert_eq!(h.state.audit().len(), before + 1, "the refusal is audited");

    let empty = h.run(&operator(), Command::Batch { proposals: Vec::new() });
    assert_eq!(empty.into_batch(), Some(Vec::new()));
    assert_eq!(h.state.audit().len(), before + 1);
}

#[test]
fn only_a_batch_result_reads_as_one() {
    let mut h = Harness::with_tenants();
    assert_eq!(h.run(&admin(ACME), project(ACME, "p1")).into_batch(), None);
    assert_eq!(h.run(&auditor(ACME), project(ACME, "p2")).into_batch(), None);
    let results = vec![h.run(&admin(ACME), project(ACME, "p3"))];
    assert_eq!(CommandResult::batch(&results).into_batch(), Some(results));
}

// --- snapshot versions and snapshots ---------------------------------------

fn expect_bump(h: &mut Harness, actor: &ActorRef, command: Command, bumped: bool) {
    let before = (h.state.snapshot_version(ACME), h.state.snapshot_version(GLOBEX));
    let generation = h.state.push_generation();
    let applied = h.ok(actor, command);
    let after = (h.state.snapshot_version(ACME), h.state.snapshot_version(GLOBEX));
    assert_eq!(after.1, before.1, "another tenant's version never moves");
    // Watches wake on the push generation: it moves exactly when a snapshot does.
    assert_eq!(h.state.push_generation() > generation, bumped, "push generation");
    if bumped {
        assert_eq!(after.0, before.0 + 1);
        assert_eq!(applied.tenant_snapshot_version, Some(after.0));
    } else {
        assert_eq!(after.0, before.0);
        assert_eq!(applied.tenant_snapshot_version, None);
    }
}

#[test]
fn snapshot_versions_move_only_with_policies_and_overrides() {
    let mut h = Harness::with_tenants();
    expect_bump(&mut h, &admin(ACME), project(ACME, "p1"), false);
    expect_bump(&mut h, &admin(ACME), actor_cmd(ACME, "alice", ActorRole::Sre), false);
    expect_bump(&mut h, &admin(ACME), key(Some(ACME), "k1", 1), false);
    expect_bump(
        &mut h,
        &admin(ACME),
        Command::RevokeApiKey { key_id: "k1".into(), reason: "x".into() },
        false,
    );
    expect_bump(&mut h, &author(ACME), apply(ACME, policy("pol-a", 100)), true);
    expect_bump(&mut h, &author(ACME), apply(ACME, policy("pol-a", 100)), false); // identical
    expect_bump(&mut h, &author(ACME), apply(ACME, policy("pol-a", 200)), true);
    expect_bump(&mut h, &author(ACME), transition(ACME, "pol-a", PolicyStatus::Active, None), true);
    let o = grant("o1", "pol-a", &sre(ACME), h.now());
    expect_bump(&mut h, &sre(ACME), grant_cmd(ACME, o), true);
    expect_bump(
        &mut h,
        &sre(ACME),
        Command::RevokeOverride { tenant_id: ACME.into(), override_id: "o1".into(), reason: "x".into() },
        true,
    );
    expect_bump(
        &mut h,
        &auditor(ACME),
        Command::RecordDenial {
            tenant_id: Some(ACME.into()),
            action: "x".into(),
            target: "y".into(),
            reason: "z".into(),
        },
        false,
    );
    // Rejections never move it.
    let version = h.state.snapshot_version(ACME);
    h.rejected(
        &author(ACME),
        transition(ACME, "pol-a", PolicyStatus::Draft, None),
        RejectionCode::IllegalTransition,
    );
    assert_eq!(h.state.snapshot_version(ACME), version);
    assert_eq!(version, 5);
}

fn signer() -> SnapshotSigner {
    SnapshotSigner::from_secret_bytes(&[42u8; 32]).unwrap()
}

#[test]
fn the_snapshot_holds_active_latest_versions_and_live_overrides() {
    let mut h = Harness::with_tenants();
    let writer = author(ACME);
    let sre = sre(ACME);
    h.ok(&writer, apply(ACME, active(policy("pol-live", 100))));
    h.ok(&writer, apply(ACME, policy("pol-live", 200))); // v2, still ACTIVE
    h.ok(&writer, apply(ACME, policy("pol-draft", 100)));
    h.ok(&writer, apply(ACME, active(policy("pol-suspended", 100))));
    h.ok(&writer, apply(ACME, active(policy("pol-retired", 100))));
    h.ok(&writer, apply(ACME, active(policy("pol-b", 100))));
    h.ok(&author(GLOBEX), apply(GLOBEX, active(policy("pol-globex", 100))));

    let now = h.now();
    h.ok(&sre, grant_cmd(ACME, grant("ovr-now", "pol-live", &sre, now)));
    let mut soon = grant("ovr-later", "pol-live", &sre, now + 7_200_000);
    soon.expires_at_ms = soon.starts_at_ms + 60_000;
    h.ok(&sre, grant_cmd(ACME, soon));
    let mut short = grant("ovr-short", "pol-b", &sre, h.now());
    short.expires_at_ms = short.starts_at_ms + 5_000;
    h.ok(&sre, grant_cmd(ACME, short.clone()));
    h.ok(&sre, grant_cmd(ACME, grant("ovr-revoked", "pol-b", &sre, h.now())));
    h.ok(
        &sre,
        Command::RevokeOverride {
            tenant_id: ACME.into(),
            override_id: "ovr-revoked".into(),
            reason: "x".into(),
        },
    );
    h.ok(&sre, grant_cmd(ACME, grant("ovr-of-suspended", "pol-suspended", &sre, h.now())));
    h.ok(&writer, transition(ACME, "pol-suspended", PolicyStatus::Suspended, Some("incident")));
    h.ok(&writer, transition(ACME, "pol-retired", PolicyStatus::Retired, Some("gone")));

    let issued_at = short.expires_at_ms; // ovr-short has just expired
    let not_after = issued_at + 60_000;
    let snap = h.state.policy_snapshot(ACME, issued_at, not_after).unwrap();
    assert_eq!(snap.tenant_id, ACME);
    assert_eq!(snap.version, h.state.snapshot_version(ACME));
    assert_eq!((snap.issued_at_ms, snap.not_after_ms), (issued_at, not_after));
    let ids: Vec<(&str, u64)> = snap.policies.iter().map(|p| (p.id.as_str(), p.version)).collect();
    assert_eq!(ids, [("pol-b", 1), ("pol-live", 2)]);
    assert_eq!(snap.policies[1].limits[0].max, Some(200.0));
    let overrides: Vec<&str> = snap.overrides.iter().map(|o| o.override_id.as_str()).collect();
    assert_eq!(overrides, ["ovr-later", "ovr-now"]);

    // Signs and verifies with aos-core.
    let bytes = aos_core::sign(&snap, &signer()).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer().verifying_key());
    let options =
        VerifyOptions { tenant_id: ACME, last_accepted_version: Some(snap.version - 1), now_ms: issued_at };
    let verified = aos_core::verify(&bytes, &trusted, &options).unwrap();
    assert_eq!(verified.snapshot(), &snap);
    assert_eq!(verified.version(), snap.version);

    // Another tenant's snapshot has only its own policies.
    let globex = h.state.policy_snapshot(GLOBEX, issued_at, not_after).unwrap();
    assert_eq!(globex.policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["pol-globex"]);
    assert_eq!(globex.version, 1);
}

#[test]
fn no_snapshot_before_the_first_policy() {
    let mut h = Harness::with_tenants();
    assert_eq!(h.state.policy_snapshot(ACME, 1, 2), Err(StateError::NoSnapshot { tenant_id: ACME.into() }));
    assert_eq!(
        h.state.policy_snapshot("initech", 1, 2),
        Err(StateError::UnknownTenant { tenant_id: "initech".into() })
    );
    // A draft is a change too: version 1, with no policies in it.
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1)));
    let snap = h.state.policy_snapshot(ACME, 1, 2).unwrap();
    assert_eq!((snap.version, snap.policies.len()), (1, 0));
    // A bad window is aos-core's refusal, passed through.
    assert!(matches!(h.state.policy_snapshot(ACME, 5, 5), Err(StateError::Snapshot(_))));
}

// --- indices and serialisation --------------------------------------------

#[test]
fn last_applied_index_follows_the_log() {
    let mut state = ControlState::default();
    assert_eq!(state.last_applied_index(), 0);
    let p = Harness::new()
        .proposal(&operator(), Command::CreateTenant { tenant_id: ACME.into(), name: "A".into() });
    state.apply(7, &p);
    assert_eq!(state.last_applied_index(), 7);
    assert_eq!(state.audit().last().unwrap().log_index, 7);
    state.advance_applied_index(9);
    assert_eq!(state.last_applied_index(), 9);
    state.advance_applied_index(3);
    assert_eq!(state.last_applied_index(), 9);
}

/// A state with every kind of record, a rejection with field errors in the
/// request log, and a ledger.
fn populated() -> ControlState {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), project(ACME, "p1"));
    h.ok(&admin(ACME), actor_cmd(ACME, "alice", ActorRole::Sre));
    h.ok(&admin(ACME), key(Some(ACME), "k1", 1));
    h.ok(&operator(), key(None, "k-ops", 2));
    h.ok(&admin(ACME), Command::RevokeApiKey { key_id: "k1".into(), reason: "rotated".into() });
    let mut p = active(policy("pol-a", 100));
    p.limits[0].max = Some(0.1 + 0.2 - 0.3 + 100.0); // a float that must survive exactly
    p.limits[0].signal = aos_core::policy::LimitSignal::CostUsd;
    p.monitors.cost = true;
    h.ok(&author(ACME), apply(ACME, p));
    h.ok(&author(ACME), apply(ACME, active(policy("pol-a", 300))));
    h.ok(&sre(ACME), grant_cmd(ACME, grant("o1", "pol-a", &sre(ACME), h.now())));
    h.ok(
        &sre(ACME),
        Command::RevokeOverride { tenant_id: ACME.into(), override_id: "o1".into(), reason: "x".into() },
    );
    let mut bad = policy("pol-bad", 1);
    bad.limits[0].max = Some(-1.0);
    h.rejected(&author(ACME), apply(ACME, bad), RejectionCode::InvalidInput);
    h.rejected(&admin(GLOBEX), project(ACME, "p9"), RejectionCode::Forbidden);
    h.ok(
        &auditor(ACME),
        Command::RecordDenial { tenant_id: None, action: "a".into(), target: "t".into(), reason: "r".into() },
    );
    h.state
}

#[test]
fn the_state_round_trips_through_json() {
    let state = populated();
    let text = serde_json::to_string(&state).unwrap();
    let back: ControlState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.audit().verify(), Ok(()));
    assert_eq!(serde_json::to_string(&back).unwrap(), text, "re-encoding is byte-identical");
}

#[test]
fn the_state_round_trips_through_a_binary_format() {
    let state = populated();
    let bytes = postcard::to_stdvec(&state).unwrap();
    let back: ControlState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.audit().verify(), Ok(()));
    assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
}

#[test]
fn a_restored_state_carries_on_identically() {
    let mut original = populated();
    let mut restored: ControlState =
        serde_json::from_str(&serde_json::to_string(&original).unwrap()).unwrap();
    let mut next = Harness::new().proposal(&author(ACME), apply(ACME, active(policy("pol-z", 5))));
    next.request_id = "after-restore".into();
    assert_eq!(original.apply(1_000, &next), restored.apply(1_000, &next));
    assert_eq!(original, restored);
    assert_eq!(restored.audit().verify(), Ok(()));
}

#[test]
fn rejections_with_field_errors_serialise_cleanly() {
    let state = populated();
    let json = serde_json::to_value(&state).unwrap();
    let cached = json["requests"]["results"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r.get("REJECTED").is_some_and(|r| r["code"] == "INVALID_INPUT"))
        .unwrap();
    assert_eq!(
        cached["REJECTED"]["field_errors"][0],
        json!({"path": "policy.limits[0].max", "message": "must not be negative, got -1"})
    );
}

// --- workload keys (issue 4) -----------------------------------------------

fn workload_key(tenant: Option<&str>, id: &str, n: u64) -> Command {
    Command::CreateApiKey {
        tenant_id: tenant.map(str::to_owned),
        key_id: id.into(),
        name: format!("workload key {id}"),
        role: ActorRole::Workload,
        secret_hash: secret_hash(n),
    }
}

#[test]
fn workload_keys_travel_in_the_tenant_snapshot_until_revoked() {
    let mut h = Harness::with_tenants();
    h.ok(&admin(ACME), apply(ACME, active(policy("p1", 1_000))));
    let v1 = h.state.snapshot_version(ACME);
    let created = h.ok(&admin(ACME), workload_key(Some(ACME), "wk-1", 7));
    assert_eq!(created.tenant_snapshot_version, Some(v1 + 1), "a new key is a new snapshot");
    // An admin key does not travel.
    h.ok(&admin(ACME), key(Some(ACME), "admin-2", 8));
    assert_eq!(h.state.snapshot_version(ACME), v1 + 1);
    let snapshot = h.state.issued_snapshot(ACME, 60_000).unwrap();
    let keys: Vec<(&str, &str)> =
        snapshot.workload_keys.iter().map(|k| (k.key_id.as_str(), k.secret_sha256.as_str())).collect();
    assert_eq!(keys, [("wk-1", secret_hash(7).as_str())]);
    // Another tenant's snapshot never carries it.
    h.ok(&admin(GLOBEX), apply(GLOBEX, active(policy("p1", 1_000))));
    assert!(h.state.issued_snapshot(GLOBEX, 60_000).unwrap().workload_keys.is_empty());

    let revoked =
        h.ok(&admin(ACME), Command::RevokeApiKey { key_id: "wk-1".into(), reason: "leaked".into() });
    assert_eq!(revoked.tenant_snapshot_version, Some(v1 + 2));
    assert!(h.state.issued_snapshot(ACME, 60_000).unwrap().workload_keys.is_empty());
}

#[test]
fn workload_is_a_role_for_tenant_keys_only() {
    let mut h = Harness::with_tenants();
    let refused = h.rejected(&operator(), workload_key(None, "wk-op", 9), RejectionCode::InvalidInput);
    assert!(format!("{refused:?}").contains("belongs to a tenant"), "{refused:?}");
    let refused =
        h.rejected(&admin(ACME), actor_cmd(ACME, "bot", ActorRole::Workload), RejectionCode::InvalidInput);
    assert!(format!("{refused:?}").contains("not for human actors"), "{refused:?}");
}
