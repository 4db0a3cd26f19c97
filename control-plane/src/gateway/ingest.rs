//! `Ingest`: an agent's record batches committed through Raft, each acked
//! only after its commit, so the agent deletes only what the cluster
//! holds. Batches are de-duplicated by record id in the state machine, so
//! a batch resent after a lost ack is harmless. Each ack names this node
//! and the leader it relies on, so that an agent can deliver straight to
//! the leader instead of through a follower's forward (the agent's
//! `leader_seek`).

use aos_cp_state::{Command, CommandResult, EdgeAgentRecord, IngestRecord, Proposal, RecordText};
use aos_proto::agent::{BatchAck, RecordBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{PushStream, unavailable};
use crate::bootstrap::system_actor;
use crate::node::{LeaderContact, Node};
use crate::write::propose;

/// Acks waiting to be sent on one stream.
const ACK_BUFFER: usize = 16;
/// Most records per Raft entry: a batch is committed as several entries so
/// that each stays small enough to replicate within a heartbeat.
pub const RECORDS_PER_ENTRY: usize = 100;

/// Starts serving one agent's ingest stream.
pub fn start(node: Node, agent: EdgeAgentRecord, inbound: Streaming<RecordBatch>) -> PushStream<BatchAck> {
    let (tx, rx) = mpsc::channel(ACK_BUFFER);
    tokio::spawn(async move {
        if let Err(status) = serve(&node, &agent, inbound, &tx).await {
            tracing::info!(message = "ingest stream ended", agent_id = %agent.agent_id, status = %status.message());
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn serve(
    node: &Node,
    agent: &EdgeAgentRecord,
    mut inbound: Streaming<RecordBatch>,
    tx: &mpsc::Sender<Result<BatchAck, Status>>,
) -> Result<(), Status> {
    while let Some(batch) = inbound.message().await? {
        let records: Vec<IngestRecord> = batch
            .records
            .into_iter()
            .map(|r| IngestRecord {
                record_id: r.record_id,
                // Invalid UTF-8 is kept (lossily) and then filed as
                // MALFORMED by the state machine, never dropped. A JSON
                // object is validated here, once, and travels in the
                // proposal as itself (`RecordText`).
                json: RecordText::new(
                    String::from_utf8(r.json)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                ),
            })
            .collect();
        let mut ack = BatchAck {
            batch_seq: batch.batch_seq,
            accepted: 0,
            duplicates: 0,
            node_id: node.id(),
            leader_id: 0,
        };
        // One Raft entry per chunk, proposed together so they pipeline. If
        // any fails the agent resends the whole batch, and the records
        // already committed count as duplicates then.
        let mut proposals = tokio::task::JoinSet::new();
        for chunk in records.chunks(RECORDS_PER_ENTRY) {
            let proposal = Proposal {
                request_id: format!("ingest-{}-{}", agent.agent_id, first_id(chunk)),
                actor: system_actor(),
                at_ms: crate::now_ms(),
                command: Command::IngestRecords {
                    edge_agent_id: agent.agent_id.clone(),
                    records: chunk.to_vec(),
                },
            };
            let node = node.clone();
            proposals.spawn(async move { propose(&node, proposal).await });
        }
        while let Some(joined) = proposals.join_next().await {
            let committed =
                joined.map_err(|e| Status::internal(format!("ingest task: {e}")))?.map_err(unavailable)?;
            match committed.result {
                CommandResult::Applied(applied) => {
                    ack.accepted += count(&applied.detail, "accepted");
                    // A refused rewrite or a record older than the tenant's
                    // retention is settled for the agent (it cannot fix it;
                    // the refusal is audited), so it is acked too.
                    ack.duplicates += count(&applied.detail, "duplicates")
                        + count(&applied.detail, "rewrites_refused")
                        + count(&applied.detail, "expired");
                }
                CommandResult::Rejected(rejection) => {
                    return Err(Status::invalid_argument(format!(
                        "batch {} refused: {}{}",
                        batch.batch_seq,
                        rejection.message,
                        rejection.field_errors.iter().map(|e| format!("; {e}")).collect::<String>()
                    )));
                }
            }
        }
        // Named after the commit, so the agent is steered by the leader that
        // is, not the one there was when the batch arrived. Only a leader
        // this node relies on is named: an agent never chases one that may
        // be cut off.
        ack.leader_id = match node.leader_contact() {
            LeaderContact::Usable(leader) => leader,
            _ => 0,
        };
        if tx.send(Ok(ack)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A request id unique to the batch's content start: the first record id
/// plus a random nonce (de-duplication is by record id, not request id).
fn first_id(records: &[IngestRecord]) -> String {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    format!("{}-{}", records.first().map_or("empty", |r| r.record_id.as_str()), hex::encode(nonce))
}

fn count(detail: &serde_json::Value, field: &str) -> u32 {
    detail[field].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}
