//! Integration tests of the sled Raft store: openraft's conformance suite, durability across
//! reopen, snapshots and corrupt data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod compression;
mod corruption;
mod durability;
mod offline;
mod payload;
mod pieces;
mod snapshot;
mod suite;
mod support;
