//! What a command handler returns: an [`Effect`] to audit (and report) when
//! it changed the state, or a [`Refusal`] when it changed nothing.
//!
//! Handlers check everything before they mutate anything, so returning a
//! `Refusal` always means the domain state is untouched.

use aos_core::FieldError;
use serde_json::Value;

use crate::actor::ActorRef;
use crate::audit::{AuditAction, AuditOutcome};
use crate::command::RejectionCode;

/// What a handler knows about the proposal it is applying.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// Who asked.
    pub(crate) actor: &'a ActorRef,
    /// The proposal's timestamp.
    pub(crate) at_ms: u64,
    /// The seq the audit entry for this proposal will get.
    pub(crate) audit_seq: u64,
}

/// A successful change, described for the ledger and the caller.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    pub(crate) action: AuditAction,
    pub(crate) outcome: AuditOutcome,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    /// Audit detail text.
    pub(crate) detail: String,
    /// `Applied::detail`.
    pub(crate) result: Value,
    /// Whether the tenant's snapshot content may have changed.
    pub(crate) touches_snapshot: bool,
    /// Further tenants whose snapshot gets a new version (signer change,
    /// reissue before expiry).
    pub(crate) reissue: Vec<String>,
}

impl Effect {
    pub(crate) fn new(action: AuditAction, detail: impl Into<String>) -> Self {
        Effect {
            action,
            outcome: AuditOutcome::Applied,
            before: None,
            after: None,
            detail: detail.into(),
            result: Value::Null,
            touches_snapshot: false,
            reissue: Vec::new(),
        }
    }

    pub(crate) fn before(mut self, value: Value) -> Self {
        self.before = Some(value);
        self
    }

    pub(crate) fn after(mut self, value: Value) -> Self {
        self.after = Some(value);
        self
    }

    pub(crate) fn result(mut self, value: Value) -> Self {
        self.result = value;
        self
    }

    pub(crate) fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Gives these tenants a new snapshot version as well.
    pub(crate) fn reissue(mut self, tenants: Vec<String>) -> Self {
        self.reissue = tenants;
        self
    }

    /// Marks the change as affecting the tenant's snapshot.
    pub(crate) fn touches_snapshot(mut self) -> Self {
        self.touches_snapshot = true;
        self
    }
}

/// A refused command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) code: RejectionCode,
    pub(crate) message: String,
    pub(crate) field_errors: Vec<FieldError>,
}

impl Refusal {
    fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into(), field_errors: Vec::new() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Refusal::new(RejectionCode::NotFound, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Refusal::new(RejectionCode::Conflict, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Refusal::new(RejectionCode::Forbidden, message)
    }

    pub(crate) fn illegal_transition(message: impl Into<String>) -> Self {
        Refusal::new(RejectionCode::IllegalTransition, message)
    }

    /// `InvalidInput` carrying `errors`; the message lists them.
    pub(crate) fn invalid(errors: Vec<FieldError>) -> Self {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Refusal {
            code: RejectionCode::InvalidInput,
            message: format!("invalid input: {}", listed.join("; ")),
            field_errors: errors,
        }
    }

    /// `Ok` when `errors` is empty, else an `InvalidInput` refusal.
    pub(crate) fn check(errors: Vec<FieldError>) -> Result<(), Refusal> {
        if errors.is_empty() { Ok(()) } else { Err(Refusal::invalid(errors)) }
    }

    /// The audit action a refusal is recorded under.
    pub(crate) fn audit_action(&self) -> AuditAction {
        if self.code == RejectionCode::Forbidden {
            AuditAction::AccessDenied
        } else {
            AuditAction::CommandRejected
        }
    }
}
