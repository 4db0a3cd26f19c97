//! # aos-proto
//!
//! The wire contract between edge agents and the control plane: snapshot
//! watch streams (ACK/NACK), record ingest and Raft RPCs, as protobuf
//! definitions under `proto/proto/` compiled without a system `protoc`.
//!
//! Domain types stay in `aos-core`; conversions live here so that protobuf
//! never leaks into the pure core. The definitions arrive with the control
//! plane issue; until then signed snapshots travel as opaque envelope bytes
//! (`aos_core::snapshot::Envelope`).
