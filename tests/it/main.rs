//! Cross-crate integration tests: one binary, a module per area.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on any unexpected error"
)]

mod agent_sync;
mod alerts;
mod aosctl_cluster;
mod audit_offline;
mod data_access;
mod exports;
mod governance;
mod governance_cluster;
mod incidents;
mod policy_to_decision;
mod support;
mod t0_gate;
