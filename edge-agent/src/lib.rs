//! # aos-edge-agent
//!
//! The daemon customers run next to their workload (not to be confused with
//! the customer's *workload agent*, the `agent_id` of a run). It verifies
//! signed snapshots with `aos_core::verify`, keeps the last good one on disk,
//! enforces `aos_core::decide` synchronously at every step, mediates data
//! access and streams records back through a durable outbox.
//!
//! Built in the edge-agent issue.
