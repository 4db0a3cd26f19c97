//! Near-threshold alert configuration (GAP-017, GAP-018). Delivery is the
//! EVENT path's job; this is only the model.

use serde::{Deserialize, Serialize};

/// Where alerts for a policy are delivered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotifyChannel {
    /// Stored and listed in the operator UI/API.
    Ui,
    /// Signed JSON POST to the tenant's webhook.
    Webhook,
    /// Email over SMTP.
    Email,
}

/// Near-threshold alerting for a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Emit `NEAR` signals when a tier is crossed.
    #[serde(default = "default_near_threshold")]
    pub near_threshold: bool,
    /// Percentages of a limit that count as near, e.g. `[50, 70, 80, 90]`;
    /// each in 1..=99. Defaults to `[80]`.
    #[serde(default = "default_tiers")]
    pub tiers: Vec<u8>,
    /// Channels that receive this policy's alerts. Defaults to `[UI]`.
    #[serde(default = "default_notify")]
    pub notify: Vec<NotifyChannel>,
}

fn default_near_threshold() -> bool {
    true
}

fn default_tiers() -> Vec<u8> {
    vec![80]
}

fn default_notify() -> Vec<NotifyChannel> {
    vec![NotifyChannel::Ui]
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            near_threshold: default_near_threshold(),
            tiers: default_tiers(),
            notify: default_notify(),
        }
    }
}
