//! From a proposal to a handler: what the command is about (its
//! [`Subject`]: tenant and target, for the ledger), whether the actor may do
//! it, and which handler runs it.
//!
//! Authorisation is the API layer's job; this is defence in depth, applied
//! identically on every replica:
//! - an actor of tenant `t` may only touch tenant `t` (INV-003);
//! - cluster-level commands (tenants, operator keys, signing keys,
//!   snapshot reissue) need a cluster
//!   operator (`tenant_id: None`) with role `admin`;
//! - within a tenant: `admin` may do everything; `policy_author` may apply
//!   and transition policies; `sre` may grant and revoke overrides;
//!   `auditor` may change nothing;
//! - `RECORD_DENIAL` is open to every actor: it only writes the ledger.

use aos_core::policy::ActorRole;

use crate::actor::{ActorRef, ActorType};
use crate::audit::{AuditAction, AuditOutcome};
use crate::command::{Command, Proposal};
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::keys::{self, NewKey};
use crate::{
    activity, alerts, data_access, edge_agents, governance, incidents, overrides, policies, signing_keys,
    tenants,
};

/// What a command is about, for authorisation and the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The tenant concerned, if any.
    pub(crate) tenant_id: Option<String>,
    /// The resource, e.g. `tenants/acme/policies/pol-a`.
    pub(crate) target: String,
    /// Who may do it.
    need: Need,
}

/// Authority a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Anyone (only `RECORD_DENIAL`).
    Nothing,
    /// A cluster-operator admin.
    Operator,
    /// One of `roles`, in the subject's tenant (operators act in every
    /// tenant). `what` completes "may not …".
    Roles { roles: &'static [ActorRole], what: &'static str },
    /// A cluster operator (no tenant) with one of `roles`.
    ClusterRoles { roles: &'static [ActorRole], what: &'static str },
}

const ADMIN: &[ActorRole] = &[ActorRole::Admin];
const POLICY_WRITERS: &[ActorRole] = &[ActorRole::Admin, ActorRole::PolicyAuthor];
const OVERRIDE_GRANTORS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Sre];
const GOVERNORS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Sre];
/// Every role of a tenant may read, so may take its evidence out.
const EXPORTERS: &[ActorRole] =
    &[ActorRole::Admin, ActorRole::PolicyAuthor, ActorRole::Sre, ActorRole::Auditor];

impl Subject {
    /// Describes `command` against the current state.
    pub(crate) fn of(command: &Command, domain: &Domain) -> Subject {
        let tenant = |t: &str| Some(t.to_owned());
        let roles = |roles, what| Need::Roles { roles, what };
        let (tenant_id, target, need) = match command {
            Command::CreateTenant { tenant_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}"), Need::Operator)
            }
            Command::CreateProject { tenant_id, project_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/projects/{project_id}"),
                roles(ADMIN, "create projects"),
            ),
            Command::CreateApiKey { tenant_id: None, key_id, .. } => {
                (None, format!("api_keys/{key_id}"), Need::Operator)
            }
            Command::CreateApiKey { tenant_id: Some(t), key_id, .. } => {
                (tenant(t), format!("api_keys/{key_id}"), roles(ADMIN, "create API keys"))
            }
            Command::RevokeApiKey { key_id, .. } => {
                let target = format!("api_keys/{key_id}");
                match domain.api_keys.get(key_id) {
                    Some(key) if key.tenant_id.is_none() => (None, target, Need::Operator),
                    Some(key) => (key.tenant_id.clone(), target, roles(ADMIN, "revoke API keys")),
                    // Unknown key: only the role is checked; the handler
                    // answers NOT_FOUND.
                    None => (None, target, roles(ADMIN, "revoke API keys")),
                }
            }
            Command::CreateActor { tenant_id, actor_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/actors/{actor_id}"),
                roles(ADMIN, "create actors"),
            ),
            Command::ApplyPolicy { tenant_id, policy } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/policies/{}", policy.id),
                roles(POLICY_WRITERS, "apply policies"),
            ),
            Command::TransitionPolicy { tenant_id, policy_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/policies/{policy_id}"),
                roles(POLICY_WRITERS, "change a policy's status"),
            ),
            Command::GrantOverride { tenant_id, policy_override } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/overrides/{}", policy_override.override_id),
                roles(OVERRIDE_GRANTORS, "grant overrides"),
            ),
            Command::RevokeOverride { tenant_id, override_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/overrides/{override_id}"),
                roles(OVERRIDE_GRANTORS, "revoke overrides"),
            ),
            Command::AddSigningKey { .. } => (None, "signing_keys".to_owned(), Need::Operator),
            Command::ActivateSigningKey { key_id } | Command::RetireSigningKey { key_id, .. } => {
                (None, format!("signing_keys/{key_id}"), Need::Operator)
            }
            Command::ReissueSnapshots { .. } => (None, "snapshots".to_owned(), Need::Operator),
            Command::CreateJoinToken { tenant_id, token_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/join_tokens/{token_id}"),
                roles(ADMIN, "create join tokens"),
            ),
            Command::RevokeJoinToken { token_id, .. } => {
                let owner = domain.edge_agents.token(token_id).map(|t| t.tenant_id.clone());
                let target = format!("join_tokens/{token_id}");
                (owner, target, roles(ADMIN, "revoke join tokens"))
            }
            Command::RegisterEdgeAgent { tenant_id, agent_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/edge_agents/{agent_id}"), Need::Operator)
            }
            Command::RecordAgentSync { agent_id, .. } | Command::RecordAgentConnection { agent_id, .. } => {
                let owner = domain.edge_agents.agent(agent_id).map(|a| a.tenant_id.clone());
                (owner, format!("edge_agents/{agent_id}"), Need::Operator)
            }
            Command::RecordAgentAcks { tenant_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/edge_agents"), Need::Operator)
            }
            Command::IngestRecords { edge_agent_id, .. } => {
                let owner = domain.edge_agents.agent(edge_agent_id).map(|a| a.tenant_id.clone());
                (owner, format!("edge_agents/{edge_agent_id}/records"), Need::Operator)
            }
            Command::SetGovernance { tenant_id: Some(tenant_id), .. } => (
                tenant(tenant_id),
                format!("governance/tenants/{tenant_id}"),
                roles(GOVERNORS, "change governance state"),
            ),
            Command::SetGovernance { tenant_id: None, .. } => (
                None,
                "governance/global".to_owned(),
                Need::ClusterRoles { roles: GOVERNORS, what: "change the global governance state" },
            ),
            Command::ExpireGovernance {} => (None, "governance".to_owned(), Need::Operator),
            Command::TransitionIncident { tenant_id, incident_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/incidents/{incident_id}"),
                roles(GOVERNORS, "acknowledge or resolve incidents"),
            ),
            Command::CreateSuppression { tenant_id, suppression_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/suppressions/{suppression_id}"),
                roles(GOVERNORS, "suppress incidents"),
            ),
            Command::SetAlertChannel { tenant_id, channel, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/alert_channels/{}", channel.as_str()),
                roles(ADMIN, "configure alert channels"),
            ),
            Command::RecordAlertDelivery { tenant_id, alert_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/alerts/{alert_id}"), Need::Operator)
            }
            Command::RecordDenial { tenant_id, target, .. } => {
                (tenant_id.clone(), target.clone(), Need::Nothing)
            }
            // Only reaches here nested in another batch, to be refused.
            Command::Batch { .. } => (None, "batch".to_owned(), Need::Nothing),
            Command::SetRetention { tenant_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/retention"), roles(ADMIN, "set retention"))
            }
            Command::ApplyRetention { tenant_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/records"), Need::Operator)
            }
            Command::RecordExport { tenant_id, kind, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/exports/{}", kind.to_ascii_lowercase()),
                roles(EXPORTERS, "export evidence"),
            ),
            Command::SetTenantDataKey { tenant_id, .. } => {
                (tenant(tenant_id), format!("tenants/{tenant_id}/data_key"), roles(ADMIN, "manage data keys"))
            }
            Command::PutDataSource { tenant_id, source } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/sources/{}", source.source_id),
                roles(ADMIN, "manage data sources"),
            ),
            Command::SetSourceCredential { tenant_id, source_id, .. }
            | Command::RecordSourceProbe { tenant_id, source_id, .. }
            | Command::TransitionSource { tenant_id, source_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/sources/{source_id}"),
                roles(ADMIN, "manage data sources"),
            ),
            Command::PutKnowledgePlane { tenant_id, plane } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/planes/{}", plane.plane_id),
                roles(ADMIN, "manage knowledge planes"),
            ),
            Command::SetPlaneActivation { tenant_id, plane_id, .. } => (
                tenant(tenant_id),
                format!("tenants/{tenant_id}/planes/{plane_id}"),
                roles(ADMIN, "activate knowledge planes"),
            ),
        };
        Subject { tenant_id, target, need }
    }

    /// Whether `actor` may act on this subject.
    pub(crate) fn authorize(&self, actor: &ActorRef) -> Result<(), Refusal> {
        let role = actor.role.as_str();
        match self.need {
            Need::Nothing => Ok(()),
            Need::Operator => {
                if let Some(own) = &actor.tenant_id {
                    Err(Refusal::forbidden(format!(
                        "an actor of tenant `{own}` may not perform cluster-operator actions"
                    )))
                } else if actor.role != ActorRole::Admin {
                    Err(Refusal::forbidden(format!(
                        "role `{role}` may not perform cluster-operator actions (admin required)"
                    )))
                } else {
                    Ok(())
                }
            }
            Need::ClusterRoles { roles, what } => match &actor.tenant_id {
                Some(own) => Err(Refusal::forbidden(format!(
                    "an actor of tenant `{own}` may not {what} (cluster operators only)"
                ))),
                None if roles.contains(&actor.role) => Ok(()),
                None => Err(Refusal::forbidden(format!("role `{role}` may not {what}"))),
            },
            Need::Roles { roles, what } => {
                if let (Some(own), Some(target)) = (&actor.tenant_id, &self.tenant_id)
                    && own != target
                {
                    return Err(Refusal::forbidden(format!(
                        "an actor of tenant `{own}` may not act on tenant `{target}`"
                    )));
                }
                if roles.contains(&actor.role) {
                    Ok(())
                } else {
                    Err(Refusal::forbidden(format!("role `{role}` may not {what}")))
                }
            }
        }
    }
}

/// An API-key actor's key must exist and be unrevoked when its proposal is
/// applied, not only when a node authenticated it: a lagging follower may
/// still accept a key revoked a moment ago, and this closes that window for
/// every write. `RECORD_DENIAL` is exempt so a refusal is still recorded.
fn check_key_live(domain: &Domain, actor: &ActorRef, command: &Command) -> Result<(), Refusal> {
    if actor.actor_type != ActorType::ApiKey || matches!(command, Command::RecordDenial { .. }) {
        return Ok(());
    }
    match domain.api_keys.get(&actor.actor_id) {
        Some(key) if key.revoked.is_some() => {
            Err(Refusal::forbidden(format!("API key `{}` is revoked", actor.actor_id)))
        }
        Some(_) => Ok(()),
        None => Err(Refusal::forbidden(format!("API key `{}` does not exist", actor.actor_id))),
    }
}

/// Checks and runs `proposal` against `domain`. On `Err` the domain is
/// unchanged.
pub(crate) fn execute(
    domain: &mut Domain,
    proposal: &Proposal,
    subject: &Subject,
    audit_seq: u64,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    if proposal.request_id.is_empty() {
        errors.push(aos_core::FieldError::new("request_id", "must not be empty"));
    }
    if proposal.actor.actor_id.trim().is_empty() {
        errors.push(aos_core::FieldError::new("actor.actor_id", "must not be empty"));
    }
    Refusal::check(errors)?;
    check_key_live(domain, &proposal.actor, &proposal.command)?;
    subject.authorize(&proposal.actor)?;

    let ctx = Ctx { actor: &proposal.actor, at_ms: proposal.at_ms, audit_seq };
    match &proposal.command {
        Command::CreateTenant { tenant_id, name } => tenants::create_tenant(domain, &ctx, tenant_id, name),
        Command::CreateProject { tenant_id, project_id, name } => {
            tenants::create_project(domain, &ctx, tenant_id, project_id, name)
        }
        Command::CreateApiKey { tenant_id, key_id, name, role, secret_hash } => {
            let new = NewKey { tenant_id: tenant_id.as_deref(), key_id, name, role: *role, secret_hash };
            keys::create_api_key(domain, &ctx, new)
        }
        Command::RevokeApiKey { key_id, reason } => keys::revoke_api_key(domain, &ctx, key_id, reason),
        Command::CreateActor { tenant_id, actor_id, display_name, role } => {
            tenants::create_actor(domain, &ctx, tenant_id, actor_id, display_name, *role)
        }
        Command::ApplyPolicy { tenant_id, policy } => policies::apply_policy(domain, &ctx, tenant_id, policy),
        Command::TransitionPolicy { tenant_id, policy_id, to, reason } => {
            policies::transition_policy(domain, tenant_id, policy_id, *to, reason.as_deref())
        }
        Command::GrantOverride { tenant_id, policy_override } => {
            overrides::grant_override(domain, &ctx, tenant_id, policy_override)
        }
        Command::RevokeOverride { tenant_id, override_id, reason } => {
            overrides::revoke_override(domain, &ctx, tenant_id, override_id, reason)
        }
        Command::AddSigningKey { public_key } => signing_keys::add_signing_key(domain, &ctx, public_key),
        Command::ActivateSigningKey { key_id } => signing_keys::activate_signing_key(domain, key_id),
        Command::RetireSigningKey { key_id, reason } => {
            signing_keys::retire_signing_key(domain, &ctx, key_id, reason)
        }
        Command::ReissueSnapshots { tenant_ids } => signing_keys::reissue_snapshots(domain, tenant_ids),
        Command::CreateJoinToken { tenant_id, token_id, secret_hash, expires_at_ms } => {
            edge_agents::create_join_token(domain, &ctx, tenant_id, token_id, secret_hash, *expires_at_ms)
        }
        Command::RevokeJoinToken { token_id, reason } => {
            edge_agents::revoke_join_token(domain, &ctx, token_id, reason)
        }
        Command::RegisterEdgeAgent { tenant_id, agent_id, name, token_id, cert_fingerprint } => {
            let new = edge_agents::NewAgent { tenant_id, agent_id, name, token_id, cert_fingerprint };
            edge_agents::register_edge_agent(domain, &ctx, new)
        }
        Command::RecordAgentSync { agent_id, version, governance_version, nack_reason } => {
            edge_agents::record_agent_sync(
                domain,
                &ctx,
                agent_id,
                *version,
                *governance_version,
                nack_reason.as_deref(),
            )
        }
        Command::RecordAgentAcks { tenant_id, acks } => {
            edge_agents::record_agent_acks(domain, &ctx, tenant_id, acks)
        }
        Command::RecordAgentConnection { agent_id, node_id, connected } => {
            edge_agents::record_agent_connection(domain, &ctx, agent_id, *node_id, *connected)
        }
        Command::SetGovernance { tenant_id, mode, reason, ttl_ms } => {
            let new = governance::NewSetting {
                tenant_id: tenant_id.as_deref(),
                mode: *mode,
                reason,
                ttl_ms: *ttl_ms,
            };
            governance::set_governance(domain, &ctx, &new)
        }
        Command::ExpireGovernance {} => governance::expire_governance(domain, &ctx),
        Command::IngestRecords { edge_agent_id, records } => {
            activity::ingest_records(domain, &ctx, edge_agent_id, records)
        }
        Command::SetAlertChannel { tenant_id, channel, target } => {
            alerts::set_alert_channel(domain, tenant_id, *channel, target)
        }
        Command::RecordAlertDelivery { tenant_id, alert_id, channel, error } => {
            alerts::record_alert_delivery(domain, &ctx, tenant_id, alert_id, *channel, error.as_deref())
        }
        Command::TransitionIncident { tenant_id, incident_id, to, note } => {
            incidents::transition_incident(domain, &ctx, tenant_id, incident_id, *to, note.as_deref())
        }
        Command::CreateSuppression { tenant_id, suppression_id, policy_id, category, until_ms, reason } => {
            let new = incidents::NewSuppression {
                tenant_id,
                suppression_id,
                policy_id: policy_id.as_deref(),
                category: *category,
                until_ms: *until_ms,
                reason,
            };
            incidents::create_suppression(domain, &ctx, &new)
        }
        Command::SetTenantDataKey { tenant_id, data_key } => {
            data_access::set_data_key(domain, tenant_id, data_key)
        }
        Command::PutDataSource { tenant_id, source } => {
            data_access::put_source(domain, &ctx, tenant_id, source)
        }
        Command::SetSourceCredential { tenant_id, source_id, sealed } => {
            data_access::set_credential(domain, &ctx, tenant_id, source_id, sealed)
        }
        Command::RecordSourceProbe { tenant_id, source_id, fingerprint, ok, detail } => {
            data_access::record_probe(domain, &ctx, tenant_id, source_id, fingerprint, *ok, detail)
        }
        Command::TransitionSource { tenant_id, source_id, to, reason } => {
            data_access::transition_source(domain, &ctx, tenant_id, source_id, *to, reason)
        }
        Command::PutKnowledgePlane { tenant_id, plane } => {
            data_access::put_plane(domain, &ctx, tenant_id, plane)
        }
        Command::SetPlaneActivation { tenant_id, plane_id, active, reason } => {
            data_access::set_plane_activation(domain, &ctx, tenant_id, plane_id, *active, reason)
        }
        Command::SetRetention { tenant_id, max_age_seconds } => {
            activity::set_retention(domain, tenant_id, *max_age_seconds)
        }
        Command::ApplyRetention { tenant_id, cutoff_ms } => {
            activity::apply_retention(domain, &ctx, tenant_id, *cutoff_ms)
        }
        Command::RecordExport { tenant_id, kind, subject, sha256 } => {
            domain.tenant(tenant_id)?;
            Ok(Effect::new(
                AuditAction::EvidenceExported,
                format!("{kind} of {subject} exported (sha256 {sha256})"),
            )
            .result(serde_json::json!({ "recorded": true, "sha256": sha256 })))
        }
        Command::RecordDenial { action, target, reason, .. } => Ok(Effect::new(
            AuditAction::AccessDenied,
            format!("denied by the API layer: {action} on `{target}`: {reason}"),
        )
        .outcome(AuditOutcome::Rejected)
        .result(serde_json::json!({ "recorded": true, "action": action, "target": target }))),
        // A top-level batch is unpacked by `ControlState::apply`; one found
        // here was nested in a batch.
        Command::Batch { .. } => Err(Refusal::invalid(vec![aos_core::FieldError::new(
            "command",
            "a BATCH cannot be nested inside a BATCH",
        )])),
    }
}
