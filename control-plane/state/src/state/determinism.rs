//! Property tests over random proposal sequences: replicas that apply the
//! same log agree exactly, a snapshot/restore mid-log changes nothing, and
//! the per-proposal contract (one audit entry, rejections change nothing,
//! replays are free) holds at every step.

use aos_core::policy::{ActorRole, PolicyStatus};
use proptest::prelude::*;

use crate::test_support::*;
use crate::{ActorRef, Command, CommandResult, ControlState, Proposal};

const TENANTS: [&str; 3] = [ACME, GLOBEX, "initech"];
const ROLES: [ActorRole; 4] = [ActorRole::Admin, ActorRole::PolicyAuthor, ActorRole::Sre, ActorRole::Auditor];
const STATUSES: [PolicyStatus; 4] =
    [PolicyStatus::Draft, PolicyStatus::Active, PolicyStatus::Suspended, PolicyStatus::Retired];

fn tenant() -> impl Strategy<Value = String> {
    prop_oneof![4 => Just(ACME), 4 => Just(GLOBEX), 1 => Just("initech")].prop_map(str::to_owned)
}

/// Who proposes: mostly a member of the tenant the command names, so that
/// many commands get past authorisation; sometimes the operator or a member
/// of a random tenant.
#[derive(Debug, Clone)]
enum Who {
    Operator,
    Member(ActorRole),
    Stranger(&'static str, ActorRole),
}

fn who() -> impl Strategy<Value = Who> {
    let role = || prop::sample::select(&ROLES[..]);
    prop_oneof![
        1 => Just(Who::Operator),
        6 => role().prop_map(Who::Member),
        1 => (prop::sample::select(&TENANTS[..]), role()).prop_map(|(t, r)| Who::Stranger(t, r)),
    ]
}

fn resolve(who: &Who, command: &Command) -> ActorRef {
    let named = match command {
        Command::CreateTenant { tenant_id, .. }
        | Command::CreateProject { tenant_id, .. }
        | Command::CreateActor { tenant_id, .. }
        | Command::ApplyPolicy { tenant_id, .. }
        | Command::TransitionPolicy { tenant_id, .. }
        | Command::GrantOverride { tenant_id, .. }
        | Command::RevokeOverride { tenant_id, .. }
        | Command::RecordExport { tenant_id, .. }
        | Command::SetRetention { tenant_id, .. } => Some(tenant_id.as_str()),
        Command::CreateApiKey { tenant_id, .. } | Command::RecordDenial { tenant_id, .. } => {
            tenant_id.as_deref()
        }
        Command::RevokeApiKey { .. }
        | Command::AddSigningKey { .. }
        | Command::ActivateSigningKey { .. }
        | Command::RetireSigningKey { .. }
        | Command::ReissueSnapshots { .. }
        | Command::RevokeJoinToken { .. }
        | Command::RecordAgentSync { .. }
        | Command::RecordAgentAcks { .. }
        | Command::IngestRecords { .. }
        | Command::RecordAgentConnection { .. }
        | Command::ApplyRetention { .. }
        | Command::ExpireGovernance {}
        | Command::Batch { .. } => None,
        Command::SetGovernance { tenant_id, .. } => tenant_id.as_deref(),
        Command::TransitionIncident { tenant_id, .. }
        | Command::CreateSuppression { tenant_id, .. }
        | Command::SetAlertChannel { tenant_id, .. }
        | Command::RecordAlertDelivery { tenant_id, .. } => Some(tenant_id.as_str()),
        Command::CreateJoinToken { tenant_id, .. } | Command::RegisterEdgeAgent { tenant_id, .. } => {
            Some(tenant_id.as_str())
        }
        Command::SetTenantDataKey { tenant_id, .. }
        | Command::PutDataSource { tenant_id, .. }
        | Command::SetSourceCredential { tenant_id, .. }
        | Command::RecordSourceProbe { tenant_id, .. }
        | Command::TransitionSource { tenant_id, .. }
        | Command::PutKnowledgePlane { tenant_id, .. }
        | Command::SetPlaneActivation { tenant_id, .. } => Some(tenant_id.as_str()),
    };
    let as_member = |t: &str, role: ActorRole| member(t, &format!("{t}-{}", role.as_str()), role);
    match who {
        Who::Operator => operator(),
        Who::Member(role) => as_member(named.unwrap_or(ACME), *role),
        Who::Stranger(t, role) => as_member(t, *role),
    }
}

fn command() -> impl Strategy<Value = Command> {
    let id = || (0u8..3).prop_map(|n| format!("id-{n}"));
    prop_oneof![
        1 => (tenant(), id()).prop_map(|(tenant_id, name)| Command::CreateTenant { tenant_id, name }),
        1 => (tenant(), id()).prop_map(|(tenant_id, project_id)| Command::CreateProject {
            tenant_id,
            project_id,
            name: "P".into()
        }),
        1 => (prop::option::of(tenant()), id(), prop::sample::select(&ROLES[..]), 0u64..4).prop_map(
            |(tenant_id, key_id, role, n)| Command::CreateApiKey {
                tenant_id,
                key_id,
                name: "K".into(),
                role,
                secret_hash: secret_hash(n),
            }
        ),
        1 => id().prop_map(|key_id| Command::RevokeApiKey { key_id, reason: "r".into() }),
        1 => (tenant(), id(), prop::sample::select(&ROLES[..])).prop_map(|(tenant_id, actor_id, role)| {
            Command::CreateActor { tenant_id, actor_id, display_name: "A".into(), role }
        }),
        4 => (tenant(), 0u8..3, 0u64..3, any::<bool>(), prop::bool::weighted(0.85)).prop_map(
            |(tenant_id, p, max, is_active, valid)| {
                let mut doc = policy(&format!("pol-{p}"), max * 100);
                if is_active {
                    doc = active(doc);
                }
                if !valid {
                    doc.monitors.tokens = false;
                }
                Command::ApplyPolicy { tenant_id, policy: doc }
            }
        ),
        4 => (tenant(), 0u8..3, prop::sample::select(&STATUSES[..]), prop::bool::weighted(0.85)).prop_map(
            |(tenant_id, p, to, reason)| Command::TransitionPolicy {
                tenant_id,
                policy_id: format!("pol-{p}"),
                to,
                reason: reason.then(|| "because".to_owned()),
            }
        ),
        3 => (tenant(), id(), 0u8..3, 0u64..20).prop_map(|(tenant_id, o, p, start)| {
            let start = T0 + start * 10_000;
            Command::GrantOverride {
                tenant_id,
                policy_override: grant(&o, &format!("pol-{p}"), &operator(), start),
            }
        }),
        1 => (tenant(), id()).prop_map(|(tenant_id, override_id)| Command::RevokeOverride {
            tenant_id,
            override_id,
            reason: "r".into()
        }),
        1 => (tenant(), prop::option::of(1u64..5)).prop_map(|(tenant_id, max_age_seconds)| {
            Command::SetRetention { tenant_id, max_age_seconds }
        }),
        1 => (tenant(), 0u64..20_000).prop_map(|(tenant_id, cutoff_ms)| Command::ApplyRetention {
            tenant_id,
            cutoff_ms
        }),
        1 => tenant().prop_map(|tenant_id| Command::RecordExport {
            tenant_id,
            kind: "EVIDENCE_BUNDLE".into(),
            subject: "run r".into(),
            sha256: "00".repeat(32),
        }),
        1 => prop::option::of(tenant()).prop_map(|tenant_id| Command::RecordDenial {
            tenant_id,
            action: "GET".into(),
            target: "x".into(),
            reason: "no".into()
        }),
        1 => (tenant(), id(), 0u8..2).prop_map(|(tenant_id, plane_id, n)| Command::PutKnowledgePlane {
            tenant_id,
            plane: crate::data_access::PlaneSpec {
                plane_id,
                name: "Plane".into(),
                sensitivity: aos_core::snapshot::Sensitivity::Internal,
                default_policy: None,
                bound_source_ids: (n == 1).then(|| "src-0".to_owned()).into_iter().collect(),
            },
        }),
        1 => (tenant(), id(), any::<bool>()).prop_map(|(tenant_id, plane_id, active)| {
            Command::SetPlaneActivation { tenant_id, plane_id, active, reason: "owner".into() }
        }),
        1 => (tenant(), 0u8..2).prop_map(|(tenant_id, n)| Command::PutDataSource {
            tenant_id,
            source: serde_json::from_value(serde_json::json!({
                "source_id": format!("src-{n}"),
                "asset_type": "SQL",
                "sql": { "engine": "SQLITE", "target": "/tmp/x.db", "templates": [] },
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        }),
        1 => (tenant(), 0u8..2).prop_map(|(tenant_id, n)| Command::SetTenantDataKey {
            tenant_id,
            data_key: crate::data_access::WrappedDataKey {
                data_key_id: format!("dk-{n}"),
                master_key_id: "mk".into(),
                nonce: vec![n; 24],
                wrapped: vec![n; 48],
            },
        }),
        1 => (tenant(), 0u8..2, 0u8..2).prop_map(|(tenant_id, n, k)| Command::SetSourceCredential {
            tenant_id,
            source_id: format!("src-{n}"),
            sealed: aos_core::access::SealedCredential {
                data_key_id: format!("dk-{k}"),
                nonce: vec![k; 24],
                ciphertext: vec![n; 32],
            },
        }),
        1 => (tenant(), 0u8..2, any::<bool>()).prop_map(|(tenant_id, n, ok)| Command::RecordSourceProbe {
            tenant_id,
            source_id: format!("src-{n}"),
            fingerprint: "stale".into(),
            ok,
            detail: "probe".into(),
        }),
        1 => (tenant(), 0u8..2, any::<bool>()).prop_map(|(tenant_id, n, enable)| Command::TransitionSource {
            tenant_id,
            source_id: format!("src-{n}"),
            to: if enable { aos_core::access::SourceStatus::Enabled } else { aos_core::access::SourceStatus::Disabled },
            reason: "r".into(),
        }),
        1 => (1u8..4).prop_map(|seed| Command::AddSigningKey { public_key: public_key(seed) }),
        1 => (1u8..4).prop_map(|seed| Command::ActivateSigningKey { key_id: signing_key_id(seed) }),
        1 => (1u8..4).prop_map(|seed| Command::RetireSigningKey {
            key_id: signing_key_id(seed),
            reason: "r".into()
        }),
        1 => prop::collection::vec(tenant(), 0..3).prop_map(|tenant_ids| Command::ReissueSnapshots { tenant_ids }),
        1 => (tenant(), 0u8..3).prop_map(|(tenant_id, n)| Command::SetAlertChannel {
            tenant_id,
            channel: crate::alerts::Channel::Webhook,
            target: format!("https://hooks.example.com/{n}"),
        }),
        1 => (tenant(), id(), 0u8..3).prop_map(|(tenant_id, suppression_id, p)| Command::CreateSuppression {
            tenant_id,
            suppression_id,
            policy_id: Some(format!("pol-{p}")),
            category: None,
            until_ms: T0 + 3_600_000,
            reason: "r".into(),
        }),
        1 => tenant().prop_map(|tenant_id| Command::TransitionIncident {
            tenant_id,
            incident_id: "inc-1".into(),
            to: crate::incidents::IncidentStatus::Resolved,
            note: None,
        }),
    ]
}

fn signer(seed: u8) -> aos_core::snapshot::SnapshotSigner {
    aos_core::snapshot::SnapshotSigner::from_secret_bytes(&[seed; 32]).unwrap()
}

fn public_key(seed: u8) -> String {
    hex::encode(signer(seed).verifying_key().as_bytes())
}

fn signing_key_id(seed: u8) -> String {
    signer(seed).key_id().as_str().to_owned()
}

/// A log of proposals: two tenants created up front (a third, `initech`,
/// never exists), then random commands; some re-send an earlier request id
/// (client retries).
fn log() -> impl Strategy<Value = Vec<Proposal>> {
    prop::collection::vec((who(), command(), 0u64..5_000, prop::option::of(0usize..64)), 1..64).prop_map(
        |steps| {
            let mut out: Vec<Proposal> = [ACME, GLOBEX]
                .iter()
                .enumerate()
                .map(|(i, t)| Proposal {
                    request_id: format!("setup-{i}"),
                    actor: operator(),
                    at_ms: T0,
                    command: Command::CreateTenant { tenant_id: (*t).to_owned(), name: "T".into() },
                })
                .collect();
            for (i, (who, mut command, jitter, retry)) in steps.into_iter().enumerate() {
                let actor = resolve(&who, &command);
                // Grants name their proposer (mismatches are unit-tested).
                if let Command::GrantOverride { policy_override, .. } = &mut command {
                    policy_override.granted_by.actor_id.clone_from(&actor.actor_id);
                    policy_override.granted_by.role = actor.role;
                }
                let at_ms = T0 + i as u64 * 10_000 + jitter;
                let request_id = match retry {
                    Some(back) if back < out.len() && back % 4 == 0 => {
                        out[out.len() - 1 - back].request_id.clone()
                    }
                    _ => format!("req-{i}"),
                };
                out.push(Proposal { request_id, actor, at_ms, command });
            }
            out
        },
    )
}

fn run(state: &mut ControlState, log: &[Proposal], first_index: u64) -> Vec<CommandResult> {
    log.iter().enumerate().map(|(i, p)| state.apply(first_index + i as u64, p)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn replicas_applying_the_same_log_agree(log in log()) {
        let mut a = ControlState::default();
        let mut b = ControlState::default();
        let results_a = run(&mut a, &log, 1);
        let results_b = run(&mut b, &log, 1);
        prop_assert_eq!(&results_a, &results_b);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        prop_assert_eq!(postcard::to_stdvec(&a).unwrap(), postcard::to_stdvec(&b).unwrap());
        prop_assert_eq!(a.audit().verify(), Ok(()));
    }

    #[test]
    fn a_snapshot_restored_mid_log_changes_nothing(log in log(), cut in 0usize..64) {
        let cut = cut.min(log.len());
        let mut whole = ControlState::default();
        run(&mut whole, &log, 1);

        let mut first = ControlState::default();
        run(&mut first, &log[..cut], 1);
        let bytes = postcard::to_stdvec(&first).unwrap();
        let mut restored: ControlState = postcard::from_bytes(&bytes).unwrap();
        run(&mut restored, &log[cut..], 1 + cut as u64);
        prop_assert_eq!(&restored, &whole);
    }

    #[test]
    fn every_step_keeps_the_contract(log in log()) {
        let mut state = ControlState::default();
        for (i, p) in log.iter().enumerate() {
            let before = state.clone();
            let replay = before.requests().get(&p.request_id).cloned();
            let result = state.apply(i as u64 + 1, p);
            if let Some(original) = replay {
                prop_assert_eq!(&result, &original);
                prop_assert_eq!(state.audit(), before.audit());
                prop_assert_eq!(state.domain(), before.domain());
                continue;
            }
            prop_assert_eq!(state.audit().len(), before.audit().len() + 1);
            let entry = state.audit().last().unwrap();
            prop_assert_eq!(entry.seq, result.audit_seq());
            prop_assert_eq!(&entry.request_id, &p.request_id);
            if !result.is_applied() {
                prop_assert_eq!(state.domain(), before.domain());
            }
            for tenant in TENANTS {
                prop_assert!(state.snapshot_version(tenant) >= before.snapshot_version(tenant));
                if state.snapshot_version(tenant) > 0 {
                    let at = p.at_ms;
                    prop_assert!(state.policy_snapshot(tenant, at, at + 60_000).is_ok());
                }
            }
        }
    }
}
