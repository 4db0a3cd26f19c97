//! # aos-proto
//!
//! The wire contract between control-plane nodes (and, with the edge-agent
//! issue, between edge agents and the control plane), compiled from
//! `proto/` at build time without a system `protoc`.
//!
//! Domain types stay in `aos-core` and the control-plane crates; conversions
//! live next to the code that uses them, so protobuf never leaks into the
//! pure core.

#![allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]

/// Raft RPCs between control-plane nodes.
pub mod raft {
    tonic::include_proto!("aos.raft.v1");
}

/// Write forwarding and read barriers between control-plane nodes.
pub mod cluster {
    tonic::include_proto!("aos.cluster.v1");
}

/// Edge agents ↔ control plane: join, snapshot watch with ACK/NACK, record
/// ingest.
pub mod agent {
    tonic::include_proto!("aos.agent.v1");
}

/// The edge agent's local gRPC API for the workload: governed data access
/// (the equivalent of `POST /api/v1/access`).
pub mod agent_local {
    tonic::include_proto!("aos.agent.local.v1");
}
