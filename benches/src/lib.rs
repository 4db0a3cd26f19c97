//! Equivalent Cedar and Rego formulations of one AOS policy decision, for
//! side-by-side benchmarks only.
//!
//! AOS's evaluator (`aos_core::decide`) is benchmarked against the *same*
//! decision expressed in Cedar (`cedar-policy` 4.x, [`cedar_equiv`]) and in
//! Rego (`regorus` 0.14.x, [`rego_equiv`]: both its tree-walking interpreter,
//! [`RegoEquivalent`], and its bytecode VM, [`RegoVmEquivalent`]). The
//! decision: N per-run budget policies (token and cost limits, scoped to all
//! runs or to a list of workload agents) and a step request; deny iff any
//! applicable policy is breached, the lowest breaching policy id wins ("STOP,
//! most restrictive wins, ties go to the lowest policy_id"). [`scenario`]
//! generates the shared deterministic inputs and a plain-Rust oracle;
//! `tests/equivalence.rs` checks that every engine agrees with the oracle, so
//! the comparison is apples to apples.
//!
//! Nothing here is part of AOS itself: these types exist to be measured, not
//! used.

pub mod aos_equiv;
pub mod cedar_equiv;
pub mod cluster;
pub mod error;
pub mod http_load;
pub mod rego_equiv;
pub mod scenario;

pub use aos_equiv::AosEquivalent;
pub use cedar_equiv::CedarEquivalent;
pub use error::EquivError;
pub use rego_equiv::{RegoEquivalent, RegoVmEquivalent};
