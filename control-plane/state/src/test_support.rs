//! Helpers for unit tests: actors, policies, and a harness that numbers
//! proposals like a Raft log would.

use aos_core::policy::{ActorRole, OverrideGrantor, Policy, PolicyOverride, PolicyStatus, Scope};
use serde_json::json;

use crate::{
    ActorRef, ActorType, AuditAction, AuditOutcome, Command, CommandResult, ControlState, Proposal,
    Rejection, RejectionCode,
};

pub const ACME: &str = "acme";
pub const GLOBEX: &str = "globex";
/// Proposal timestamps start here (Unix ms) and advance by 1 s per entry.
pub const T0: u64 = 1_700_000_000_000;

pub fn operator() -> ActorRef {
    ActorRef {
        actor_id: "bootstrap".into(),
        actor_type: ActorType::System,
        role: ActorRole::Admin,
        tenant_id: None,
    }
}

pub fn member(tenant: &str, actor_id: &str, role: ActorRole) -> ActorRef {
    ActorRef { actor_id: actor_id.into(), actor_type: ActorType::Human, role, tenant_id: Some(tenant.into()) }
}

pub fn admin(tenant: &str) -> ActorRef {
    member(tenant, &format!("{tenant}-admin"), ActorRole::Admin)
}

pub fn author(tenant: &str) -> ActorRef {
    member(tenant, &format!("{tenant}-author"), ActorRole::PolicyAuthor)
}

pub fn sre(tenant: &str) -> ActorRef {
    member(tenant, &format!("{tenant}-sre"), ActorRole::Sre)
}

pub fn auditor(tenant: &str) -> ActorRef {
    member(tenant, &format!("{tenant}-auditor"), ActorRole::Auditor)
}

/// A valid policy: a per-run token budget of `max_tokens`.
pub fn policy(id: &str, max_tokens: u64) -> Policy {
    serde_json::from_value(json!({
        "id": id,
        "name": format!("{id} token budget"),
        "scope": { "type": "ALL_RUNS" },
        "monitors": { "tokens": true },
        "limits": [{ "signal": "TOKENS", "max": max_tokens, "window": "PER_RUN" }],
    }))
    .unwrap()
}

pub fn active(mut policy: Policy) -> Policy {
    policy.status = PolicyStatus::Active;
    policy
}

/// An override of `policy_id` granted by `by` for one hour from `starts_at_ms`.
pub fn grant(override_id: &str, policy_id: &str, by: &ActorRef, starts_at_ms: u64) -> PolicyOverride {
    PolicyOverride {
        override_id: override_id.into(),
        policy_id: policy_id.into(),
        scope: Scope::all_runs(),
        granted_by: OverrideGrantor { actor_id: by.actor_id.clone(), role: by.role },
        reason: "quarter-end batch".into(),
        starts_at_ms,
        expires_at_ms: starts_at_ms + 3_600_000,
    }
}

/// A distinct, well-formed secret hash.
pub fn secret_hash(n: u64) -> String {
    format!("{n:064x}")
}

/// Applies proposals with increasing log indices, request ids and times.
#[derive(Debug, Clone, Default)]
pub struct Harness {
    pub state: ControlState,
    pub next_index: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness { state: ControlState::default(), next_index: 1 }
    }

    /// Two tenants, `acme` and `globex`, created by the operator.
    pub fn with_tenants() -> Self {
        let mut h = Harness::new();
        for (id, name) in [(ACME, "Acme"), (GLOBEX, "Globex")] {
            h.ok(&operator(), Command::CreateTenant { tenant_id: id.into(), name: name.into() });
        }
        h
    }

    /// [`Harness::with_tenants`] plus a registered edge agent per tenant:
    /// `ea-acme` and `ea-globex`.
    pub fn with_agents() -> Self {
        let mut h = Harness::with_tenants();
        for (tenant, agent, n) in [(ACME, "ea-acme", 1), (GLOBEX, "ea-globex", 2)] {
            let token = format!("jt-{n}");
            let expires_at_ms = h.now() + 3_600_000;
            h.ok(
                &admin(tenant),
                Command::CreateJoinToken {
                    tenant_id: tenant.into(),
                    token_id: token.clone(),
                    secret_hash: secret_hash(n),
                    expires_at_ms,
                },
            );
            h.ok(
                &operator(),
                Command::RegisterEdgeAgent {
                    tenant_id: tenant.into(),
                    agent_id: agent.into(),
                    name: "host".into(),
                    token_id: token,
                    cert_fingerprint: secret_hash(100 + n),
                },
            );
        }
        h
    }

    /// The time the next proposal is stamped with.
    pub fn now(&self) -> u64 {
        T0 + self.next_index * 1_000
    }

    pub fn proposal(&self, actor: &ActorRef, command: Command) -> Proposal {
        Proposal {
            request_id: format!("req-{}", self.next_index),
            actor: actor.clone(),
            at_ms: self.now(),
            command,
        }
    }

    pub fn submit(&mut self, proposal: &Proposal) -> CommandResult {
        let index = self.next_index;
        self.next_index += 1;
        self.state.apply(index, proposal)
    }

    pub fn run(&mut self, actor: &ActorRef, command: Command) -> CommandResult {
        let proposal = self.proposal(actor, command);
        self.submit(&proposal)
    }

    /// Runs a command that must be applied; returns its result.
    pub fn ok(&mut self, actor: &ActorRef, command: Command) -> crate::Applied {
        match self.run(actor, command) {
            CommandResult::Applied(applied) => applied,
            CommandResult::Rejected(r) => panic!("expected Applied, got {r:#?}"),
        }
    }

    /// Runs a command that must be rejected with `code`, and checks the
    /// rejection contract: the domain is unchanged, exactly one audit entry
    /// was written, it is `REJECTED` and the rejection names it.
    pub fn rejected(&mut self, actor: &ActorRef, command: Command, code: RejectionCode) -> Rejection {
        let before = self.state.clone();
        let result = self.run(actor, command);
        let CommandResult::Rejected(rejection) = result else {
            panic!("expected Rejected({code:?}), got {result:#?}");
        };
        assert_eq!(rejection.code, code, "{rejection:#?}");
        assert_eq!(self.state.domain(), before.domain(), "a rejected command changed the domain");
        assert_eq!(self.state.audit().len(), before.audit().len() + 1, "exactly one audit entry");
        let entry = self.state.audit().last().unwrap();
        assert_eq!(entry.seq, rejection.audit_seq);
        assert_eq!(entry.outcome, AuditOutcome::Rejected);
        let expected = if code == RejectionCode::Forbidden {
            AuditAction::AccessDenied
        } else {
            AuditAction::CommandRejected
        };
        assert_eq!(entry.action, expected);
        assert!(entry.detail.contains(&rejection.message), "{}", entry.detail);
        rejection
    }
}
