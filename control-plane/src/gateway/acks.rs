//! Records the ACKs a node's snapshot watches receive, in batches.
//!
//! An ACK says which snapshot and governance versions an edge agent holds
//! (`aosctl agent list`, `governance … --wait`). Committing each through
//! Raft on its own made a governance change reaching 100 agents cost 100
//! Raft writes, competing with the pushes still under way. Here a watch
//! hands its ACK over without waiting; one task per node commits whatever
//! arrived since its previous commit as one `RECORD_AGENT_ACKS` entry per
//! tenant (one audit entry naming every agent), so batches grow with load.
//! The first ACK after a quiet spell waits [`ACK_LINGER`] for company: a
//! governance change or a snapshot reaches every agent of a node within a
//! few milliseconds, and their ACKs are then one Raft entry per node,
//! committed after the pushes instead of competing with the ones still
//! under way (benches/README.md, governance propagation).
//!
//! An agent repeats its versions in every later ACK and on every
//! reconnect, so an ACK that cannot be committed (no leader) is only late:
//! it is kept, merged with newer ones from the same agent, and retried
//! with backoff. NACKs do not come here: they are rare and
//! security-relevant, and each is committed on its own.

use std::collections::BTreeMap;
use std::time::Duration;

use aos_cp_state::{AgentAck, CommandResult, MAX_ACKS_PER_BATCH, Proposal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bootstrap::system_actor;
use crate::node::Node;
use crate::write::propose;

/// ACKs waiting to be taken by the recorder; a full queue makes watches
/// wait (backpressure), it never drops an ACK.
const QUEUE: usize = 4_096;
/// First wait after a failed commit; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the first ACK of a batch waits for others. Only what operators
/// see is late by it (`aosctl agent list`, `governance … --wait`); the
/// agent enforces the version it ACKs from before it sends the ACK.
pub const ACK_LINGER: Duration = Duration::from_millis(20);

/// One watch's ACK, with the tenant its agent serves.
#[derive(Debug)]
struct Received {
    tenant_id: String,
    ack: AgentAck,
}

/// The handle watches use; cloning shares the recorder.
#[derive(Debug, Clone)]
pub struct AckRecorder {
    tx: mpsc::Sender<Received>,
}

impl AckRecorder {
    /// Starts the node's recorder task; it ends when every handle is gone.
    pub fn start(node: Node) -> AckRecorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(node, rx));
        AckRecorder { tx }
    }

    /// Queues an ACK for the next batch.
    pub async fn record(&self, tenant_id: &str, ack: AgentAck) {
        let received = Received { tenant_id: tenant_id.to_owned(), ack };
        if self.tx.send(received).await.is_err() {
            // Only when the node is shutting down; the agent repeats its
            // versions to whichever node it reaches next.
            tracing::debug!(message = "ACK recorder stopped; ACK not recorded");
        }
    }
}

/// ACKs not yet committed: per tenant, per agent, the highest versions.
#[derive(Debug, Default)]
struct Pending {
    tenants: BTreeMap<String, BTreeMap<String, AgentAck>>,
}

impl Pending {
    fn add(&mut self, tenant_id: String, ack: AgentAck) {
        let agents = self.tenants.entry(tenant_id).or_default();
        match agents.get_mut(&ack.agent_id) {
            Some(held) => {
                held.version = held.version.max(ack.version);
                held.governance_version = held.governance_version.max(ack.governance_version);
            }
            None => {
                agents.insert(ack.agent_id.clone(), ack);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Everything pending, as batches of at most [`MAX_ACKS_PER_BATCH`].
    fn take_batches(&mut self) -> Vec<(String, Vec<AgentAck>)> {
        let mut batches = Vec::new();
        for (tenant_id, agents) in std::mem::take(&mut self.tenants) {
            let acks: Vec<AgentAck> = agents.into_values().collect();
            for chunk in acks.chunks(MAX_ACKS_PER_BATCH) {
                batches.push((tenant_id.clone(), chunk.to_vec()));
            }
        }
        batches
    }
}

async fn run(node: Node, mut rx: mpsc::Receiver<Received>) {
    let mut pending = Pending::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => pending.add(r.tenant_id, r.ack),
                None => return,
            }
            // A closed queue (the node stopping) still commits what came.
            take_for(&mut rx, &mut pending, ACK_LINGER).await;
        }
        while let Ok(r) = rx.try_recv() {
            pending.add(r.tenant_id, r.ack);
        }
        // One proposal per tenant, together, so they pipeline in Raft.
        let mut commits = JoinSet::new();
        for (tenant_id, acks) in pending.take_batches() {
            let node = node.clone();
            commits.spawn(async move {
                let committed = commit(&node, &tenant_id, acks.clone()).await;
                (tenant_id, acks, committed)
            });
        }
        let mut failed = false;
        while let Some(joined) = commits.join_next().await {
            let Ok((tenant_id, acks, committed)) = joined else { continue };
            if !committed {
                failed = true;
                for ack in acks {
                    pending.add(tenant_id.clone(), ack);
                }
            }
        }
        if failed {
            // Keep taking ACKs while waiting, so watches never block on a
            // leaderless cluster for longer than the queue allows.
            if !take_for(&mut rx, &mut pending, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = FIRST_BACKOFF;
        }
    }
}

/// Adds what arrives within `wait` to `pending`; `false` when the queue
/// closed (every handle gone: the node is stopping).
async fn take_for(rx: &mut mpsc::Receiver<Received>, pending: &mut Pending, wait: Duration) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return true,
            received = rx.recv() => match received {
                Some(r) => pending.add(r.tenant_id, r.ack),
                None => return false,
            },
        }
    }
}

/// Commits one batch; `false` when it should be retried.
async fn commit(node: &Node, tenant_id: &str, acks: Vec<AgentAck>) -> bool {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let count = acks.len();
    let proposal = Proposal {
        request_id: format!("acks-{tenant_id}-{}-{}", node.id(), hex::encode(nonce)),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: aos_cp_state::Command::RecordAgentAcks { tenant_id: tenant_id.to_owned(), acks },
    };
    match propose(node, proposal).await {
        Ok(committed) => {
            if let CommandResult::Rejected(r) = committed.result {
                // A refusal is deterministic: retrying cannot help.
                tracing::warn!(message = "ACK batch refused", tenant = tenant_id, acks = count, code = ?r.code, reason = %r.message);
            }
            true
        }
        Err(e) => {
            tracing::warn!(message = "cannot record ACKs yet; will retry", tenant = tenant_id, acks = count, error = %e);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(agent: &str, version: u64, governance: Option<u64>) -> AgentAck {
        AgentAck { agent_id: agent.to_owned(), version, governance_version: governance }
    }

    #[test]
    fn pending_acks_keep_each_agents_highest_versions_per_tenant() {
        let mut pending = Pending::default();
        pending.add("acme".into(), ack("a", 3, Some(5)));
        pending.add("acme".into(), ack("a", 2, Some(6)));
        pending.add("acme".into(), ack("b", 0, None));
        pending.add("globex".into(), ack("g", 1, None));
        let batches = pending.take_batches();
        assert!(pending.is_empty());
        assert_eq!(
            batches,
            vec![
                ("acme".to_owned(), vec![ack("a", 3, Some(6)), ack("b", 0, None)]),
                ("globex".to_owned(), vec![ack("g", 1, None)]),
            ]
        );
    }

    #[test]
    fn large_backlogs_split_into_batches_the_state_accepts() {
        let mut pending = Pending::default();
        for i in 0..(MAX_ACKS_PER_BATCH + 5) {
            pending.add("acme".into(), ack(&format!("agent-{i:05}"), 1, None));
        }
        let sizes: Vec<usize> = pending.take_batches().iter().map(|(_, acks)| acks.len()).collect();
        assert_eq!(sizes, vec![MAX_ACKS_PER_BATCH, 5]);
    }
}
