//! `Join`: a join token and a CSR in, an edge-agent identity out.
//!
//! The token is looked up by the SHA-256 of its secret (one read barrier
//! when unknown locally, so a token created through another node a moment
//! ago works); the certificate is issued for the CSR's public key only; the
//! registration is committed through Raft, where the token is re-checked
//! at apply time. The certificate leaves only after that commit, so an
//! agent never holds an identity the cluster does not know. Failed joins
//! are written to the audit ledger (`ACCESS_DENIED`).

use aos_cp_state::edge_agents::EdgeAgents;
use aos_cp_state::{Command, CommandResult, Proposal, RejectionCode};
use aos_proto::agent::{JoinRequest, JoinResponse};
use tonic::Status;

use super::unavailable;
use crate::bootstrap::system_actor;
use crate::http::secret_hash;
use crate::node::Node;
use crate::write::{Consistency, propose, read_barrier};

/// Longest agent name accepted.
const MAX_NAME_LEN: usize = 128;

/// Handles one join.
pub async fn join(node: &Node, request: JoinRequest) -> Result<JoinResponse, Status> {
    let ca = node.ca().ok_or_else(|| Status::failed_precondition("this node has no cluster CA"))?;
    let name = if request.agent_name.trim().is_empty() { "edge-agent" } else { request.agent_name.trim() };
    if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "agent_name: at most {MAX_NAME_LEN} printable characters"
        )));
    }
    let hash = secret_hash(request.join_token.trim());
    let lookup = |node: &Node| node.state().read(|s| s.0.edge_agents().token_by_hash(&hash).cloned());
    let token = match lookup(node) {
        Some(token) => Some(token),
        None => {
            read_barrier(node, Consistency::Linearizable).await.map_err(unavailable)?;
            lookup(node)
        }
    };
    let Some(token) = token else {
        deny(node, None, "unknown join token").await;
        return Err(Status::unauthenticated("unknown join token"));
    };
    let now = crate::now_ms();
    if let Err(why) = EdgeAgents::token_usable(&token, now) {
        deny(node, Some(&token.tenant_id), &why).await;
        return Err(Status::permission_denied(why));
    }
    let agent_id = format!("ea-{}", random_hex(8)?);
    let now_secs = i64::try_from(now / 1000).unwrap_or(i64::MAX);
    let certificate = ca
        .issue_agent(&request.csr_der, &agent_id, &token.tenant_id, now_secs)
        .map_err(|e| Status::invalid_argument(format!("csr_der: {e}")))?;
    let proposal = Proposal {
        request_id: format!("join-{agent_id}"),
        actor: system_actor(),
        at_ms: now,
        command: Command::RegisterEdgeAgent {
            tenant_id: token.tenant_id.clone(),
            agent_id: agent_id.clone(),
            name: name.to_owned(),
            token_id: token.token_id.clone(),
            cert_fingerprint: certificate.fingerprint.clone(),
        },
    };
    let committed = propose(node, proposal).await.map_err(unavailable)?;
    if let CommandResult::Rejected(rejection) = committed.result {
        return Err(match rejection.code {
            RejectionCode::Forbidden => Status::permission_denied(rejection.message),
            RejectionCode::NotFound => Status::not_found(rejection.message),
            RejectionCode::Conflict => Status::already_exists(rejection.message),
            RejectionCode::InvalidInput | RejectionCode::IllegalTransition => {
                Status::invalid_argument(rejection.message)
            }
        });
    }
    tracing::info!(message = "edge agent joined", agent_id = %agent_id, tenant = %token.tenant_id, name);
    Ok(JoinResponse {
        agent_id,
        tenant_id: token.tenant_id,
        certificate_der: certificate.der,
        ca_certificate_der: ca.cert_der().to_vec(),
        trusted_snapshot_keys: node.trusted_snapshot_keys(),
    })
}

/// Writes a refused join to the ledger; a failure to do so is logged, and
/// the join is refused either way.
async fn deny(node: &Node, tenant_id: Option<&str>, reason: &str) {
    let proposal = Proposal {
        request_id: format!("deny-join-{}", random_hex(8).unwrap_or_else(|_| crate::now_ms().to_string())),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: Command::RecordDenial {
            tenant_id: tenant_id.map(str::to_owned),
            action: "JOIN_EDGE_AGENT".to_owned(),
            target: "edge_agents".to_owned(),
            reason: reason.to_owned(),
        },
    };
    if let Err(e) = propose(node, proposal).await {
        tracing::warn!(message = "cannot audit a refused join", error = %e);
    }
    tracing::warn!(message = "edge agent join refused", reason);
}

fn random_hex(bytes: usize) -> Result<String, Status> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}
