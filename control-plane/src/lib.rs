//! # aos-control-plane
//!
//! The system of record: a Raft cluster (openraft, state in sled) holding
//! tenants, projects, API keys, actors, policies, overrides and connector
//! records, writing every admin mutation to a hash-chained audit ledger and
//! issuing each tenant's signed `aos_core::PolicySnapshot`.
//!
//! ## Layout
//! - [`raft`]: openraft type configuration, gRPC transport (both
//!   directions) and the binding to the sled store (`aos-cp-store`). The
//!   replicated state machine itself is the I/O-free `aos-cp-state` crate.
//! - [`node`]: one node — open, initialise, serve gRPC + HTTP, shut down.
//! - [`write`]: the write path (leader commit or forward) and linearizable
//!   read barriers.
//! - [`proposer`]: proposals made together on a node, committed as one Raft
//!   entry.
//! - [`cluster_service`]: inbound forwarding / read-index RPCs.
//! - [`http`]: the admin REST API.
//! - [`config`]: flags, env and TOML merged; the redacted effective config.
//! - [`bootstrap`]: first start — single-voter init and the operator key.
//! - [`dev`]: dev mode's demo tenant, key and example policies.
//! - [`dev_agent`]: dev mode's in-process edge agent for the demo tenant.
//! - [`gateway`]: the edge-agent gateway (mTLS): join, snapshot watch,
//!   record ingest.
//! - [`pki`]: the cluster CA, node server and agent client certificates.
//! - [`reissue`]: the leader's schedule reissuing snapshots before expiry.
//! - [`alerting`]: the leader's alert dispatcher (signed webhooks, Slack),
//!   outcomes committed through Raft.
//! - [`spine`]: boot-time spine checks; a node failing one serves nothing.
//! - [`signing`]: the snapshot signing key (env, 0600 file, or generated on init).

pub mod alerting;
pub mod bootstrap;
pub mod cluster_service;
pub mod config;
pub mod dev;
pub mod dev_agent;
pub mod email;
pub mod exports;
pub mod gateway;
pub mod http;
pub mod leader_probe;
pub mod master_key;
pub mod node;
pub mod peer_channel;
pub mod periodic;
pub mod pki;
pub mod proposer;
pub mod raft;
pub mod reissue;
pub mod reports;
pub mod retention;
pub mod signing;
pub mod snapshot_trigger;
pub mod spine;
pub mod takeover;
pub mod write;

/// Wall-clock milliseconds, stamped on proposals by the node that accepts
/// them (the state machine itself reads no clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
