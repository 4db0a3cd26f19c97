//! Counter keys: the accumulations the evaluator reads.
//!
//! The evaluator is pure, so it never stores usage. The edge agent keeps one
//! counter per [`CounterKey`] that the snapshot's limits need (see
//! [`crate::snapshot::VerifiedSnapshot::required_counters`]) and hands them to
//! `decide` through [`CounterSource`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::policy::Period;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    /// Tokens, input plus output.
    Tokens,
    /// Spend in micro-USD.
    CostMicros,
    /// Steps started (pre-step checks).
    Requests,
    /// Queries through the SQL gateway.
    DbQueries,
}

/// Over what a counter accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CounterWindow {
    /// The current run.
    PerRun,
    /// The current session.
    PerSession,
    /// The current UTC calendar period.
    Calendar(Period),
    /// The trailing `seconds`.
    Rolling {
        /// Window length.
        seconds: u64,
    },
}

/// One counter: a metric over a window, for the run being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CounterKey {
    /// What is counted.
    pub metric: Metric,
    /// Over what.
    pub window: CounterWindow,
}

impl std::fmt::Display for CounterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metric = match self.metric {
            Metric::Tokens => "tokens",
            Metric::CostMicros => "cost",
            Metric::Requests => "requests",
            Metric::DbQueries => "db queries",
        };
        match self.window {
            CounterWindow::PerRun => write!(f, "{metric} per run"),
            CounterWindow::PerSession => write!(f, "{metric} per session"),
            CounterWindow::Calendar(Period::Hourly) => write!(f, "{metric} this hour"),
            CounterWindow::Calendar(Period::Daily) => write!(f, "{metric} today"),
            CounterWindow::Calendar(Period::Monthly) => write!(f, "{metric} this month"),
            CounterWindow::Rolling { seconds } => write!(f, "{metric} over the last {seconds}s"),
        }
    }
}

/// Usage accumulated before the step being decided. `None` means the value
/// is not available, which the evaluator treats as a missing input and
/// resolves with the policy's failure mode (GAP-035).
pub trait CounterSource {
    /// The current value of `key`, if known.
    fn counter(&self, key: &CounterKey) -> Option<u64>;
}

impl CounterSource for HashMap<CounterKey, u64> {
    fn counter(&self, key: &CounterKey) -> Option<u64> {
        self.get(key).copied()
    }
}

impl CounterSource for BTreeMap<CounterKey, u64> {
    fn counter(&self, key: &CounterKey) -> Option<u64> {
        self.get(key).copied()
    }
}

/// Every counter reads zero: the state of a fresh run in a fresh window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZeroCounters;

impl CounterSource for ZeroCounters {
    fn counter(&self, _key: &CounterKey) -> Option<u64> {
        Some(0)
    }
}
