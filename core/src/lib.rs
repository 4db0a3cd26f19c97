//! # aos-core
//!
//! The pure domain of AOS, shared by the control plane and the edge agent:
//! the policy model, its validation, the evaluator that decides every step of
//! a run, and signed immutable policy snapshots. Like Cedar's core crate it
//! does no I/O, spawns nothing and reads no clock: time comes in as an
//! argument, decisions and errors go out as data.
//!
//! ## Layout
//! - [`access`]: governed data access: the source catalogue, SQL and HTTP
//!   templates, credential sealing and the plane gate (GAP-036..066).
//! - [`policy`]: the policy model (scope → monitors → limits → actions →
//!   lifecycle), overrides, lifecycle state machine.
//! - [`document`]: YAML/JSON policy documents with field-path errors.
//! - [`compile`]: validation and compilation of policies into thresholds.
//! - [`schema`]: the JSON Schema of policy documents.
//! - [`counters`]: the counter keys the evaluator reads.
//! - [`evaluate`]: `decide`, the SPINE hot path (INV-005, GAP-031, GAP-034,
//!   GAP-035, INV-002).
//! - [`pii`]: deterministic PII and secret detection.
//! - [`snapshot`]: canonical encoding, ed25519 signing and verification.
//! - [`money`]: exact micro-dollar amounts.
//! - [`export`]: signed evidence bundles (seal, open and check offline).
//! - [`grounding`]: the hallucination detector's grounding check (GAP-023).

pub mod access;
pub mod compile;
pub mod counters;
pub mod document;
mod error;
pub mod evaluate;
pub mod export;
pub mod grounding;
pub mod money;
mod path;
pub mod pii;
pub mod policy;
pub mod schema;
pub mod snapshot;
#[cfg(test)]
mod test_support;

pub use error::{FieldError, FieldErrors};
pub use evaluate::{Decision, SnapshotBindings, StepContext, decide};
pub use snapshot::{PolicySnapshot, SnapshotError, VerifiedSnapshot, sign, verify, verify_allowing_expired};
