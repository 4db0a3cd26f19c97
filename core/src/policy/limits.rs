//! Limits: hard quantitative constraints (GAP-009..012). A limit only emits
//! `NEAR` or `BREACH`; the policy's actions decide the outcome (GAP-012).
//!
//! The authored form keeps optional fields so that one flat shape covers
//! every signal and every mistake can be reported with its field path;
//! [`crate::compile`] checks the combination and produces typed thresholds.

use serde::{Deserialize, Serialize};

/// The quantity a limit constrains.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitSignal {
    /// Tokens (input + output). `max` is a whole number of tokens.
    Tokens,
    /// Spend. `max` is in USD.
    CostUsd,
    /// Spend per hour over a rolling `window_seconds` (GAP-007). `max` is USD
    /// per hour.
    BurnRateUsdPerHour,
    /// Steps started per temporal window (request rate).
    Requests,
    /// Queries through the SQL gateway (GAP-010: `{max_queries,
    /// window_seconds}` is `{signal: DB_QUERIES, max, window: TEMPORAL,
    /// window_seconds}`).
    DbQueries,
    /// Whether retrieval is allowed at all (GAP-009); uses `allowed`.
    RagAccess,
}

impl LimitSignal {
    /// The document spelling, e.g. `COST_USD`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSignal::Tokens => "TOKENS",
            LimitSignal::CostUsd => "COST_USD",
            LimitSignal::BurnRateUsdPerHour => "BURN_RATE_USD_PER_HOUR",
            LimitSignal::Requests => "REQUESTS",
            LimitSignal::DbQueries => "DB_QUERIES",
            LimitSignal::RagAccess => "RAG_ACCESS",
        }
    }
}

/// Which accumulation a limit is measured over (GAP-011).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitWindow {
    /// Since the run started.
    PerRun,
    /// Since the session started (all runs sharing a `session_id`).
    PerSession,
    /// Over time: a calendar `period` or a rolling `window_seconds`.
    Temporal,
}

/// Calendar periods for temporal limits, in UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Period {
    /// Resets at the top of every UTC hour.
    Hourly,
    /// Resets at 00:00 UTC.
    Daily,
    /// Resets at 00:00 UTC on the first day of the month.
    Monthly,
}

/// One limit as authored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// What is limited.
    pub signal: LimitSignal,
    /// The threshold; a value above it is a breach. Units depend on `signal`.
    #[serde(default)]
    pub max: Option<f64>,
    /// What the value accumulates over; required except for `RAG_ACCESS`.
    #[serde(default)]
    pub window: Option<LimitWindow>,
    /// Calendar period, for `TEMPORAL` windows (exclusive with
    /// `window_seconds`).
    #[serde(default)]
    pub period: Option<Period>,
    /// Rolling window length in seconds, for `TEMPORAL` windows (exclusive
    /// with `period`); required for `BURN_RATE_USD_PER_HOUR`.
    #[serde(default)]
    pub window_seconds: Option<u64>,
    /// For `RAG_ACCESS` only: whether retrieval is allowed (GAP-009).
    #[serde(default)]
    pub allowed: Option<bool>,
}
