//! The scenario's decision expressed in Cedar (`cedar-policy` 4.x).
//!
//! Each scenario policy becomes one `forbid` rule whose policy id is set
//! explicitly to `pol-{i:05}` (so `Diagnostics::reason()` names it directly):
//!
//! ```cedar
//! forbid (principal, action, resource)
//! when { context.agent_id == "agent-3" && (context.tokens > 12345 || context.cost > 67890) };
//! ```
//!
//! (`["agent-3", "agent-7"].contains(context.agent_id)` for two agents, no agent
//! clause for all-runs policies) plus one `permit (principal, action, resource);`
//! with id `permit-all`. Cedar's forbid-overrides-permit then yields Deny iff
//! some policy breaches, and on Deny the diagnostics' reasons are exactly the
//! satisfied forbids, i.e. the breaching policies.
//!
//! The policy set, the (empty, schema-free) entity store, the authorizer and the
//! principal/action/resource uids are built once in [`CedarEquivalent::new`].
//! Per call, [`CedarEquivalent::decide`] builds the `Context` record and the
//! `Request` from the scenario request (part of the measured work, as in AOS),
//! runs `Authorizer::is_authorized`, and maps the response back.

use std::str::FromStr as _;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression,
};

use crate::error::EquivError;
use crate::scenario::{ScenarioOutcome, ScenarioPolicy, ScenarioRequest};

/// Id of the catch-all permit.
const PERMIT_ALL_ID: &str = "permit-all";

/// A prepared Cedar policy set equivalent to a scenario policy list.
#[derive(Debug, Clone)]
pub struct CedarEquivalent {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
}

/// A Cedar string literal for `s` (Cedar accepts Rust's escape syntax).
fn cedar_str(s: &str) -> String {
    format!("{s:?}")
}

fn to_long(field: &'static str, value: u64) -> Result<i64, EquivError> {
    i64::try_from(value).map_err(|_| EquivError::LongOverflow { field, value })
}

/// The Cedar source of one scenario policy.
fn forbid_source(policy: &ScenarioPolicy) -> Result<String, EquivError> {
    let tokens = to_long("max_run_tokens", policy.max_run_tokens)?;
    let cost = to_long("max_run_cost_micros", policy.max_run_cost_micros)?;
    let over = format!("(context.tokens > {tokens} || context.cost > {cost})");
    let condition = match policy.agent_ids.as_slice() {
        [] => over,
        [one] => format!("context.agent_id == {} && {over}", cedar_str(one)),
        many => {
            let list = many.iter().map(|a| cedar_str(a)).collect::<Vec<_>>().join(", ");
            format!("[{list}].contains(context.agent_id) && {over}")
        }
    };
    Ok(format!("forbid (principal, action, resource)\nwhen {{ {condition} }};"))
}

fn uid(src: &str) -> Result<EntityUid, EquivError> {
    EntityUid::from_str(src).map_err(|e| EquivError::cedar(format!("entity uid {src}"), e))
}

impl CedarEquivalent {
    /// Parses one `forbid` per scenario policy (ids set to the scenario ids)
    /// plus a catch-all `permit`.
    pub fn new(policies: &[ScenarioPolicy]) -> Result<Self, EquivError> {
        let mut set = PolicySet::new();
        for policy in policies {
            let src = forbid_source(policy)?;
            let parsed = Policy::parse(Some(PolicyId::new(&policy.id)), &src)
                .map_err(|e| EquivError::cedar(format!("parse {}", policy.id), e))?;
            set.add(parsed).map_err(|e| EquivError::cedar(format!("add {}", policy.id), e))?;
        }
        let permit =
            Policy::parse(Some(PolicyId::new(PERMIT_ALL_ID)), "permit (principal, action, resource);")
                .map_err(|e| EquivError::cedar("parse permit-all", e))?;
        set.add(permit).map_err(|e| EquivError::cedar("add permit-all", e))?;
        Ok(Self {
            policies: set,
            entities: Entities::empty(),
            authorizer: Authorizer::new(),
            principal: uid(r#"Aos::Run::"run""#)?,
            action: uid(r#"Aos::Action::"step""#)?,
            resource: uid(r#"Aos::Budget::"run""#)?,
        })
    }

    /// Builds the Cedar request for `req` and authorizes it.
    pub fn decide(&self, req: &ScenarioRequest) -> Result<ScenarioOutcome, EquivError> {
        let context = Context::from_pairs([
            ("agent_id".to_owned(), RestrictedExpression::new_string(req.agent_id.clone())),
            (
                "tokens".to_owned(),
                RestrictedExpression::new_long(to_long("run_tokens_after_step", req.run_tokens_after_step)?),
            ),
            (
                "cost".to_owned(),
                RestrictedExpression::new_long(to_long(
                    "run_cost_micros_after_step",
                    req.run_cost_micros_after_step,
                )?),
            ),
        ])
        .map_err(|e| EquivError::cedar("context", e))?;
        let request =
            Request::new(self.principal.clone(), self.action.clone(), self.resource.clone(), context, None)
                .map_err(|e| EquivError::cedar("request", e))?;

        let response = self.authorizer.is_authorized(&request, &self.policies, &self.entities);
        let diagnostics = response.diagnostics();
        let mut errors = diagnostics.errors().peekable();
        if errors.peek().is_some() {
            let joined = errors.map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(EquivError::CedarEvaluation(joined));
        }

        match response.decision() {
            Decision::Allow => Ok(ScenarioOutcome { deny: false, winning_policy: None, breaching: 0 }),
            Decision::Deny => {
                let mut breaching = 0_usize;
                let mut winning: Option<&str> = None;
                for id in diagnostics.reason() {
                    let id: &str = id.as_ref();
                    if id == PERMIT_ALL_ID {
                        return Err(EquivError::UnexpectedDecision(
                            "permit-all listed as a reason for Deny".to_owned(),
                        ));
                    }
                    breaching += 1;
                    if winning.is_none_or(|w| id < w) {
                        winning = Some(id);
                    }
                }
                match winning {
                    Some(w) => {
                        Ok(ScenarioOutcome { deny: true, winning_policy: Some(w.to_owned()), breaching })
                    }
                    None => {
                        Err(EquivError::UnexpectedDecision("Deny without a determining forbid".to_owned()))
                    }
                }
            }
        }
    }
}
