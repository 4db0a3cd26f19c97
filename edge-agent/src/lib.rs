//! # aos-edge-agent
//!
//! The daemon customers run next to their workload (not to be confused with
//! the customer's *workload agent*, the `agent_id` of a run). It verifies
//! signed snapshots with `aos_core::verify`, keeps the last good one on disk,
//! enforces `aos_core::decide` synchronously at every step (SPINE), and
//! writes every record to a durable outbox before answering.
//!
//! ## Layout
//! - [`snapshots`]: the snapshot slot (verify → persist → swap) and the
//!   boot guard (GAP-067).
//! - [`engine`]: run lifecycle and per-step decisions; atomic
//!   check-and-reserve over the counters; same-step STOP/KILL.
//! - [`counters`]: per run, session, calendar and rolling counters.
//! - [`runs`]: run statuses, termination reasons, persisted run records.
//! - [`records`]: LLM run records, control events, incidents, system
//!   records.
//! - [`governance`]: the governance state in force (kill switch, degraded
//!   mode, halt) and what it does to a decision.
//! - [`events`]: the event reactor (EVENT path, INV-001), never blocking.
//! - [`jobs`]: scheduled jobs (GAP-052): stale runs, staleness, heartbeats.
//! - [`store`]: the sled database (snapshot, runs) and the outbox.
//! - [`outbox`]: the outbox log of records not yet delivered.
//! - [`api`]: the local HTTP API for the workload.
//! - [`grpc_api`]: the local gRPC API for the workload (governed data
//!   access, `--grpc-listen`), with the HTTP API's authentication.
//! - [`auth`]: bearer authentication of the local API with the snapshot's
//!   workload keys; a run is driven only by the key that started it.
//! - [`idempotency`]: `Idempotency-Key` on the local API's POSTs.
//! - [`ids`]: ids, clock, hashing.
//!
//! - [`identity`]: joining with a join token (CA pinned), the agent's key,
//!   certificate and CA.
//! - [`link`]: the mutual-TLS link to the control plane: snapshot watch
//!   with ACK/NACK, outbox delivery, failover with backoff and jitter.
//! - [`leader_seek`]: which node the outbox is delivered to (the Raft
//!   leader, when the agent can find it among its endpoints).
//!
//! Without a control plane (`--snapshot-file`), a signed snapshot file is
//! verified exactly as a pushed one.

pub mod api;
pub mod auth;
pub mod counters;
pub mod engine;
pub mod error;
pub mod events;
pub mod governance;
pub mod grounding;
pub mod grpc_api;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod jobs;
pub mod leader_seek;
pub mod link;
pub mod outbox;
pub mod records;
pub mod runs;
pub mod snapshots;
pub mod store;

pub use error::AgentError;
