//! The retention job (issue 8): every `retention_interval`, the leader
//! proposes `APPLY_RETENTION` with the cutoff it computed for each tenant
//! whose records outlived their maximum age (see
//! `aos_cp_state::activity`'s retention; audited `RETENTION_APPLIED`). Its
//! own task, so a slow commit here never delays snapshot reissue.

use aos_cp_state::{Command, CommandResult, Proposal};

use crate::bootstrap::system_actor;
use crate::node::{LeaderContact, Node};
use crate::write::propose;

/// Runs until `stop` flips to true.
pub async fn run(node: Node, stop: tokio::sync::watch::Receiver<bool>) {
    let mut clock = crate::periodic::Periodic::new(node.retention_interval(), stop);
    while clock.tick().await {
        if node.leader_contact() == LeaderContact::Usable(node.id()) {
            apply(&node).await;
        }
    }
}

/// Proposes the pruning of every tenant's records older than its maximum
/// age; failures are retried at the next interval.
async fn apply(node: &Node) {
    let now = crate::now_ms();
    let due = node.state().read(|s| s.0.activity().due_for_retention(now));
    for (tenant_id, cutoff_ms) in due {
        let proposal = Proposal {
            request_id: format!("retention-{tenant_id}-{cutoff_ms}"),
            actor: system_actor(),
            at_ms: now,
            command: Command::ApplyRetention { tenant_id: tenant_id.clone(), cutoff_ms },
        };
        match propose(node, proposal).await {
            Ok(committed) => match committed.result {
                CommandResult::Applied(applied) => {
                    tracing::info!(message = "retention applied", tenant = %tenant_id, pruned = %applied.detail["pruned"]);
                }
                CommandResult::Rejected(r) => {
                    tracing::warn!(message = "retention refused", tenant = %tenant_id, reason = %r.message);
                }
            },
            Err(e) => {
                tracing::warn!(message = "retention not committed; retrying later", tenant = %tenant_id, error = %e);
            }
        }
    }
}
