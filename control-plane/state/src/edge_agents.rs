//! Edge agents as replicated state: join tokens, registered agents and
//! their snapshot sync status (last ACKed version, last NACK and reason).
//!
//! - `CREATE_JOIN_TOKEN` (tenant admin): a token is stored by the SHA-256
//!   of its secret, like an API key, with an expiry. It may be used by
//!   several agents until it expires or is revoked.
//! - `REGISTER_EDGE_AGENT` (the control plane itself, after the join
//!   handler checked the token): re-checks the token at apply time — it
//!   must exist, belong to the tenant, be unrevoked and unexpired at the
//!   proposal's time — and records the agent with the fingerprint of the
//!   client certificate issued to it. From then on the certificate alone
//!   identifies the agent and its tenant.
//! - `RECORD_AGENT_CONNECTION` (system): the agent opened or left a node's
//!   snapshot watch, so every node can tell where it is connected.
//! - `RECORD_AGENT_SYNC` (system): an ACK or NACK of a snapshot version.
//!   NACKs are security-relevant (a tampered, wrongly signed or rolled-back
//!   snapshot), so both are audited.
//! - `RECORD_AGENT_ACKS` (system): the ACKs a node received from one
//!   tenant's agents since its previous batch, in one entry with one audit
//!   entry naming each agent and what it applied. A governance change
//!   reaching 100 agents is then a handful of Raft writes, not 100.

use std::collections::BTreeMap;

use aos_core::FieldError;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditAction, AuditOutcome};
use crate::domain::{Domain, Revocation};
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_sha256_hex, check_text};
use crate::serde_compat::to_json;

/// Join tokens and agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeAgents {
    tokens: BTreeMap<String, JoinTokenRecord>,
    agents: BTreeMap<String, EdgeAgentRecord>,
    /// Certificate fingerprint → agent id.
    by_fingerprint: BTreeMap<String, String>,
}

/// A join token (its secret is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Token id.
    pub token_id: String,
    /// Tenant the agents joining with it serve.
    pub tenant_id: String,
    /// SHA-256 of the secret, hex. Never in the ledger or in answers.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret_hash: String,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Creating actor.
    pub created_by: String,
    /// After this instant the token no longer joins agents.
    pub expires_at_ms: u64,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
    /// Agents that joined with it.
    pub uses: u64,
}

impl JoinTokenRecord {
    /// The record without the secret hash.
    pub fn summary(&self) -> JoinTokenRecord {
        JoinTokenRecord { secret_hash: String::new(), ..self.clone() }
    }
}

/// The last NACK an agent sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// Version refused.
    pub version: u64,
    /// Why.
    pub reason: String,
    /// Unix ms.
    pub at_ms: u64,
}

/// A registered edge agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeAgentRecord {
    /// Agent id.
    pub agent_id: String,
    /// The only tenant it may see.
    pub tenant_id: String,
    /// Operator-facing name.
    pub name: String,
    /// SHA-256 of its client certificate (DER), hex.
    pub cert_fingerprint: String,
    /// Token it joined with.
    pub token_id: String,
    /// Unix ms of the join.
    pub joined_at_ms: u64,
    /// Highest snapshot version it ACKed.
    pub acked_version: Option<u64>,
    /// Its last NACK.
    pub last_nack: Option<Nack>,
    /// Unix ms of its last ACK or NACK.
    pub last_sync_ms: Option<u64>,
    /// The control-plane node whose snapshot watch it holds now.
    #[serde(default)]
    pub connected_node: Option<u64>,
    /// Highest governance version it applied.
    #[serde(default)]
    pub acked_governance_version: Option<u64>,
    /// Unix ms it last connected or disconnected.
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
}

impl EdgeAgents {
    /// A join token by the hash of its secret, whatever its state.
    pub fn token_by_hash(&self, secret_hash: &str) -> Option<&JoinTokenRecord> {
        self.tokens.values().find(|t| t.secret_hash == secret_hash)
    }

    /// A join token by id.
    pub fn token(&self, token_id: &str) -> Option<&JoinTokenRecord> {
        self.tokens.get(token_id)
    }

    /// The agent holding the certificate with this fingerprint.
    pub fn agent_by_fingerprint(&self, fingerprint: &str) -> Option<&EdgeAgentRecord> {
        self.by_fingerprint.get(fingerprint).and_then(|id| self.agents.get(id))
    }

    /// An agent by id.
    pub fn agent(&self, agent_id: &str) -> Option<&EdgeAgentRecord> {
        self.agents.get(agent_id)
    }

    /// The agents of a tenant (`Some`) or of every tenant.
    pub fn agents(&self, tenant_id: Option<&str>) -> impl Iterator<Item = &EdgeAgentRecord> {
        self.agents.values().filter(move |a| tenant_id.is_none_or(|t| a.tenant_id == t))
    }

    /// Agents refusing what they were last offered: their last NACK is
    /// newer than their last ACK.
    pub fn nacking(&self) -> impl Iterator<Item = &EdgeAgentRecord> {
        self.agents
            .values()
            .filter(|a| a.last_nack.as_ref().is_some_and(|n| a.acked_version.is_none_or(|v| n.version > v)))
    }

    /// The join tokens of a tenant, without secret hashes.
    pub fn tokens(&self, tenant_id: &str) -> Vec<JoinTokenRecord> {
        self.tokens.values().filter(|t| t.tenant_id == tenant_id).map(JoinTokenRecord::summary).collect()
    }

    /// Whether a token joins agents at `now_ms`.
    pub fn token_usable(token: &JoinTokenRecord, now_ms: u64) -> Result<(), String> {
        if token.revoked.is_some() {
            return Err(format!("join token `{}` is revoked", token.token_id));
        }
        if now_ms > token.expires_at_ms {
            return Err(format!("join token `{}` expired at {}", token.token_id, token.expires_at_ms));
        }
        Ok(())
    }
}

/// Longest a join token may live: 30 days.
pub const MAX_TOKEN_TTL_MS: u64 = 30 * 24 * 3_600_000;

pub(crate) fn create_join_token(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    token_id: &str,
    secret_hash: &str,
    expires_at_ms: u64,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_id(&mut errors, "token_id", token_id);
    check_sha256_hex(&mut errors, "secret_hash", secret_hash);
    if expires_at_ms <= ctx.at_ms || expires_at_ms - ctx.at_ms > MAX_TOKEN_TTL_MS {
        errors.push(FieldError::new("expires_at_ms", "must be in the future and at most 30 days away"));
    }
    Refusal::check(errors)?;
    domain.tenant(tenant_id)?;
    let agents = &mut domain.edge_agents;
    if agents.tokens.contains_key(token_id) {
        return Err(Refusal::conflict(format!("join token `{token_id}` already exists")));
    }
    if agents.tokens.values().any(|t| t.secret_hash == secret_hash) {
        return Err(Refusal::conflict("this join token secret is already registered".to_owned()));
    }
    let record = JoinTokenRecord {
        token_id: token_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        secret_hash: secret_hash.to_owned(),
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
        expires_at_ms,
        revoked: None,
        uses: 0,
    };
    let summary = to_json(&record.summary());
    agents.tokens.insert(token_id.to_owned(), record);
    Ok(Effect::new(
        AuditAction::JoinTokenCreated,
        format!("join token `{token_id}` created, expires at {expires_at_ms}"),
    )
    .after(summary.clone())
    .result(summary))
}

pub(crate) fn revoke_join_token(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    token_id: &str,
    reason: &str,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    let Some(token) = domain.edge_agents.tokens.get_mut(token_id) else {
        return Err(Refusal::not_found(format!("unknown join token `{token_id}`")));
    };
    if token.revoked.is_some() {
        return Err(Refusal::conflict(format!("join token `{token_id}` is already revoked")));
    }
    token.revoked =
        Some(Revocation { at_ms: ctx.at_ms, by: ctx.actor.actor_id.clone(), reason: reason.to_owned() });
    let summary = to_json(&token.summary());
    Ok(Effect::new(AuditAction::JoinTokenRevoked, format!("join token `{token_id}` revoked: {reason}"))
        .after(summary.clone())
        .result(summary))
}

/// What `REGISTER_EDGE_AGENT` carries.
pub(crate) struct NewAgent<'a> {
    pub(crate) tenant_id: &'a str,
    pub(crate) agent_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) token_id: &'a str,
    pub(crate) cert_fingerprint: &'a str,
}

pub(crate) fn register_edge_agent(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    new: NewAgent<'_>,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_id(&mut errors, "agent_id", new.agent_id);
    check_text(&mut errors, "name", new.name);
    check_sha256_hex(&mut errors, "cert_fingerprint", new.cert_fingerprint);
    Refusal::check(errors)?;
    domain.tenant(new.tenant_id)?;
    let agents = &mut domain.edge_agents;
    let Some(token) = agents.tokens.get_mut(new.token_id) else {
        return Err(Refusal::forbidden(format!("unknown join token `{}`", new.token_id)));
    };
    if token.tenant_id != new.tenant_id {
        return Err(Refusal::forbidden(format!(
            "join token `{}` belongs to another tenant than `{}`",
            new.token_id, new.tenant_id
        )));
    }
    EdgeAgents::token_usable(token, ctx.at_ms).map_err(Refusal::forbidden)?;
    if agents.agents.contains_key(new.agent_id) {
        return Err(Refusal::conflict(format!("edge agent `{}` already exists", new.agent_id)));
    }
    if agents.by_fingerprint.contains_key(new.cert_fingerprint) {
        return Err(Refusal::conflict("this certificate is already registered".to_owned()));
    }
    token.uses += 1;
    let record = EdgeAgentRecord {
        agent_id: new.agent_id.to_owned(),
        tenant_id: new.tenant_id.to_owned(),
        name: new.name.to_owned(),
        cert_fingerprint: new.cert_fingerprint.to_owned(),
        token_id: new.token_id.to_owned(),
        joined_at_ms: ctx.at_ms,
        acked_version: None,
        last_nack: None,
        last_sync_ms: None,
        connected_node: None,
        acked_governance_version: None,
        last_seen_ms: None,
    };
    let view = to_json(&record);
    agents.by_fingerprint.insert(new.cert_fingerprint.to_owned(), new.agent_id.to_owned());
    agents.agents.insert(new.agent_id.to_owned(), record);
    Ok(Effect::new(
        AuditAction::EdgeAgentJoined,
        format!("edge agent `{}` ({}) joined with token `{}`", new.agent_id, new.name, new.token_id),
    )
    .after(view.clone())
    .result(view))
}

pub(crate) fn record_agent_sync(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    agent_id: &str,
    version: u64,
    governance_version: Option<u64>,
    nack_reason: Option<&str>,
) -> Result<Effect, Refusal> {
    let Some(agent) = domain.edge_agents.agents.get_mut(agent_id) else {
        return Err(Refusal::not_found(format!("unknown edge agent `{agent_id}`")));
    };
    agent.last_sync_ms = Some(ctx.at_ms);
    match nack_reason {
        None => {
            let what = apply_ack(agent, version, governance_version);
            Ok(Effect::new(AuditAction::SnapshotAcked, format!("edge agent `{agent_id}` applied {what}"))
                .result(serde_json::json!({
                    "acked_version": agent.acked_version,
                    "acked_governance_version": agent.acked_governance_version,
                })))
        }
        Some(reason) => {
            let reason: String = reason.chars().take(crate::ids::MAX_TEXT_LEN).collect();
            agent.last_nack = Some(Nack { version, reason: reason.clone(), at_ms: ctx.at_ms });
            Ok(Effect::new(
                AuditAction::SnapshotNacked,
                format!("edge agent `{agent_id}` refused snapshot {version}: {reason}"),
            )
            .outcome(AuditOutcome::Applied)
            .result(serde_json::json!({ "nacked_version": version })))
        }
    }
}

/// Raises the agent's acknowledged versions (never lowers them: a late
/// ACK is harmless) and says what it applied, for the ledger.
fn apply_ack(agent: &mut EdgeAgentRecord, version: u64, governance_version: Option<u64>) -> String {
    if version > 0 {
        agent.acked_version = Some(agent.acked_version.map_or(version, |v| v.max(version)));
    }
    if let Some(g) = governance_version {
        agent.acked_governance_version = Some(agent.acked_governance_version.map_or(g, |v| v.max(g)));
    }
    match (version, governance_version) {
        (0, Some(g)) => format!("governance version {g}"),
        (v, Some(g)) => format!("snapshot {v} and governance version {g}"),
        (v, None) => format!("snapshot {v}"),
    }
}

/// One edge agent's ACK in a [`Command::RecordAgentAcks`](crate::Command::RecordAgentAcks) batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAck {
    /// Agent.
    pub agent_id: String,
    /// Snapshot version it holds (0: the pushes carried only governance state).
    pub version: u64,
    /// Governance version it applied, if any.
    #[serde(default)]
    pub governance_version: Option<u64>,
}

/// Most ACKs one batch may carry; a node splits larger backlogs.
pub const MAX_ACKS_PER_BATCH: usize = 1_000;

pub(crate) fn record_agent_acks(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    acks: &[AgentAck],
) -> Result<Effect, Refusal> {
    if acks.is_empty() || acks.len() > MAX_ACKS_PER_BATCH {
        return Err(Refusal::invalid(vec![FieldError::new(
            "acks",
            format!("a batch carries 1 to {MAX_ACKS_PER_BATCH} ACKs, not {}", acks.len()),
        )]));
    }
    // Every agent must be this tenant's before anything changes: a batch
    // naming another tenant's agent is refused whole (INV-003).
    for ack in acks {
        match domain.edge_agents.agents.get(&ack.agent_id) {
            Some(agent) if agent.tenant_id != tenant_id => {
                return Err(Refusal::forbidden(format!(
                    "edge agent `{}` does not serve tenant `{tenant_id}`",
                    ack.agent_id
                )));
            }
            _ => {}
        }
    }
    let mut applied = Vec::with_capacity(acks.len());
    let mut unknown = Vec::new();
    for ack in acks {
        // An agent removed since it ACKed is skipped, not a reason to lose
        // the others' ACKs.
        let Some(agent) = domain.edge_agents.agents.get_mut(&ack.agent_id) else {
            unknown.push(ack.agent_id.as_str());
            continue;
        };
        agent.last_sync_ms = Some(ctx.at_ms);
        let what = apply_ack(agent, ack.version, ack.governance_version);
        applied.push(serde_json::json!({
            "agent_id": ack.agent_id,
            "applied": what,
            "acked_version": agent.acked_version,
            "acked_governance_version": agent.acked_governance_version,
        }));
    }
    let mut detail = format!("{} edge agents of tenant `{tenant_id}` acknowledged pushes", applied.len());
    if !unknown.is_empty() {
        detail.push_str(&format!("; skipped unknown agents {}", unknown.join(", ")));
    }
    Ok(Effect::new(AuditAction::SnapshotAcked, detail).result(serde_json::json!({ "acks": applied })))
}

#[cfg(test)]
mod tests;

pub(crate) fn record_agent_connection(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    agent_id: &str,
    node_id: u64,
    connected: bool,
) -> Result<Effect, Refusal> {
    let Some(agent) = domain.edge_agents.agents.get_mut(agent_id) else {
        return Err(Refusal::not_found(format!("unknown edge agent `{agent_id}`")));
    };
    agent.last_seen_ms = Some(ctx.at_ms);
    let (action, detail) = if connected {
        agent.connected_node = Some(node_id);
        (AuditAction::EdgeAgentConnected, format!("edge agent `{agent_id}` connected to node {node_id}"))
    } else {
        // A disconnect reported by a node the agent has already left
        // must not hide its newer connection.
        if agent.connected_node == Some(node_id) {
            agent.connected_node = None;
        }
        (AuditAction::EdgeAgentDisconnected, format!("edge agent `{agent_id}` left node {node_id}"))
    };
    let result = serde_json::json!({ "connected_node": agent.connected_node });
    Ok(Effect::new(action, detail).result(result))
}
