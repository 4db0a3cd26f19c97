//! # aos-control-plane
//!
//! The system of record: a Raft cluster (openraft, state in sled) holding
//! tenants, projects, API keys, actors, policies, overrides and connector
//! records, writing every admin mutation to a hash-chained audit ledger and
//! issuing each tenant's signed `aos_core::PolicySnapshot`.
//!
//! Built in the control-plane issue; the policy validation and snapshot
//! signing it will use already live in `aos-core`.
