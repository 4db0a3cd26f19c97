//! Alerts and the alert fatigue controller (issue 8, GAP-017, GAP-049,
//! GAP-050): near-threshold tiers and breaches the edge agents' decisions
//! announced, made into alerts deterministically inside the ingest's Raft
//! apply, with per-channel delivery state that the leader's dispatcher
//! (EVENT path, never the enforcement path) advances through Raft.
//!
//! Fatigue control, in order, for each alert intent in a new
//! `CONTROL_EVENT` record:
//!
//! 1. **De-duplicate** by (policy, signal, tier) within [`DEDUP_WINDOW_MS`]
//!    of the alert it repeats: counted on that alert (`occurrences`) and in
//!    the tenant's `deduplicated` total, nothing new to deliver.
//! 2. **Rate-limit per channel**: at most [`CHANNEL_BUDGET`] alerts per
//!    channel per tenant per [`RATE_WINDOW_MS`]. Beyond it the alert is kept
//!    (`RATE_LIMITED` on that channel) and counted on one **roll-up**
//!    alert for that channel and window, delivered once the window has
//!    closed with the exact number it summarises.
//!
//! Delivery is durable: an accepted alert's channel is `PENDING` until the
//! dispatcher commits `DELIVERED`, or `DEAD_LETTER` after
//! [`MAX_ATTEMPTS`] failures with the last error — never dropped. `UI`
//! alerts are delivered by being stored. A channel the policy asks for but
//! the tenant has not configured is `SKIPPED` with the reason.

use std::collections::BTreeMap;

use aos_core::FieldError;
use aos_core::evaluate::{AlertIntent, SignalLevel};
use aos_core::policy::NotifyChannel;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::serde_compat::to_json;

/// Repeats of the same (policy, signal, tier) within this window are
/// de-duplicated.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Rate-limit window per channel.
pub const RATE_WINDOW_MS: u64 = 60 * 1000;
/// Alerts per channel, tenant and window before roll-up.
pub const CHANNEL_BUDGET: u32 = 20;
/// Delivery attempts before an alert's channel is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 8;
/// Most alerts kept per tenant (oldest delivered ones go first).
pub const MAX_ALERTS_PER_TENANT: usize = 10_000;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    /// Stored, listed by `GET /api/v1/tenants/{t}/alerts`.
    Ui,
    /// JSON POST signed with HMAC-SHA256.
    Webhook,
    /// Email over SMTP.
    Email,
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack,
}

impl Channel {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Ui => "UI",
            Channel::Webhook => "WEBHOOK",
            Channel::Email => "EMAIL",
            Channel::Slack => "SLACK",
        }
    }
}

/// Where one channel of one alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Waiting for the dispatcher (or for its roll-up window to close).
    Pending,
    /// Delivered.
    Delivered,
    /// Gave up after [`MAX_ATTEMPTS`]; visible, never silently dropped.
    DeadLetter,
    /// Counted in a roll-up alert instead of being sent on its own.
    RateLimited,
    /// The tenant has not configured this channel.
    Skipped,
}

/// One channel's delivery of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The channel.
    pub channel: Channel,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Not before (Unix ms): backoff, or the end of a roll-up window.
    pub next_attempt_ms: u64,
    /// The last failure, or why it was skipped.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at_ms: Option<u64>,
    /// The roll-up alert it was counted in.
    pub rolled_into: Option<String>,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `al-<n>`, unique in the tenant.
    pub alert_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The policy whose limit was approached or crossed (`None` for a
    /// roll-up).
    pub policy_id: Option<String>,
    /// The signal, e.g. `TOKENS`.
    pub signal: Option<String>,
    /// `NEAR_<tier>` or `BREACH`, or `ROLLUP` for a storm summary.
    pub tier: String,
    /// The run of the first occurrence.
    pub run_id: Option<String>,
    /// Value and limit at the first occurrence.
    pub value: u64,
    /// The limit.
    pub threshold: u64,
    /// When it was raised (the proposal's time).
    pub raised_at_ms: u64,
    /// Occurrences de-duplicated into it (1 = only itself); for a roll-up,
    /// the alerts it summarises.
    pub occurrences: u64,
    /// Per-channel delivery.
    pub deliveries: Vec<Delivery>,
}

impl Alert {
    /// The human-readable line every channel sends.
    pub fn message(&self) -> String {
        if self.tier == "ROLLUP" {
            return format!(
                "{} alerts in one minute for tenant {} were rolled up (rate limit {} per channel per minute)",
                self.occurrences, self.tenant_id, CHANNEL_BUDGET
            );
        }
        format!(
            "{} {} of policy {} for tenant {}: {} of {} (run {})",
            self.signal.as_deref().unwrap_or("?"),
            self.tier,
            self.policy_id.as_deref().unwrap_or("?"),
            self.tenant_id,
            self.value,
            self.threshold,
            self.run_id.as_deref().unwrap_or("-")
        )
    }
}

/// Counts the fatigue controller keeps per tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertStats {
    /// Alert intents received.
    pub received: u64,
    /// Alerts raised (roll-ups included).
    pub raised: u64,
    /// Intents folded into an earlier alert.
    pub deduplicated: u64,
    /// Channel deliveries replaced by a roll-up.
    pub rate_limited: u64,
    /// Channel deliveries delivered.
    pub delivered: u64,
    /// Channel deliveries dead-lettered.
    pub dead_lettered: u64,
}

/// A tenant's configured channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// The channel.
    pub channel: Channel,
    /// URL (webhook, Slack) or address (email).
    pub target: String,
    /// Bumped on every change, so a webhook secret derived from it
    /// changes with the target.
    pub version: u64,
}

impl ChannelConfig {
    /// The config as non-admins and the ledger see it: scheme and host of
    /// the target, and a hash of the whole.
    pub fn redacted(&self) -> ChannelConfig {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(self.target.as_bytes()));
        // Email: the domains only; a URL: scheme and host only.
        let host = match self.channel {
            Channel::Email => self
                .target
                .split(',')
                .map(|a| format!("…@{}", a.trim().rsplit_once('@').map_or("", |(_, d)| d)))
                .collect::<Vec<_>>()
                .join(","),
            _ => self
                .target
                .split_once("://")
                .map(|(scheme, rest)| {
                    format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or(""))
                })
                .unwrap_or_default(),
        };
        ChannelConfig {
            channel: self.channel,
            target: format!("{host}/… (sha256 {})", &hash[..16]),
            version: self.version,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TenantAlerts {
    alerts: BTreeMap<u64, Alert>,
    /// (policy, signal, tier) → (alert number, raised at).
    recent: BTreeMap<String, (u64, u64)>,
    /// (channel, window start) → (deliveries counted, roll-up alert number).
    windows: BTreeMap<(Channel, u64), (u32, Option<u64>)>,
    channels: BTreeMap<Channel, ChannelConfig>,
    next: u64,
    stats: AlertStats,
}

/// Every tenant's alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerts {
    tenants: BTreeMap<String, TenantAlerts>,
}

/// One alert intent as an agent's decision announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent<'a> {
    pub(crate) policy_id: &'a str,
    pub(crate) signal: &'a str,
    pub(crate) tier: String,
    pub(crate) value: u64,
    pub(crate) threshold: u64,
    pub(crate) channels: Vec<Channel>,
    pub(crate) run_id: Option<&'a str>,
}

/// The alert intents in a `CONTROL_EVENT` record's decision (anything
/// that does not decode as one is ignored: the record itself is kept).
pub(crate) fn intents(body: &Value) -> Vec<Intent<'_>> {
    let run = body.get("run_id").and_then(Value::as_str);
    body.pointer("/decision/alerts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let intent: AlertIntent = serde_json::from_value(a.clone()).ok()?;
            let tier = match intent.level {
                SignalLevel::Near { tier } => format!("NEAR_{tier}"),
                SignalLevel::Breach => "BREACH".to_owned(),
            };
            let channels = intent
                .channels
                .iter()
                .map(|c| match c {
                    NotifyChannel::Ui => Channel::Ui,
                    NotifyChannel::Webhook => Channel::Webhook,
                    NotifyChannel::Email => Channel::Email,
                })
                .collect();
            Some(Intent {
                policy_id: a.get("policy_id")?.as_str()?,
                signal: intent.kind.as_str(),
                tier,
                value: intent.value,
                threshold: intent.threshold,
                channels,
                run_id: run,
            })
        })
        .collect()
}

impl Alerts {
    /// Runs one intent through the fatigue controller at `at_ms` (the
    /// proposal's time); the alert id when one was raised.
    pub(crate) fn raise(&mut self, tenant_id: &str, intent: &Intent<'_>, at_ms: u64) -> Option<String> {
        let tenant = self.tenants.entry(tenant_id.to_owned()).or_default();
        tenant.stats.received += 1;
        let key = format!("{}\u{1f}{}\u{1f}{}", intent.policy_id, intent.signal, intent.tier);
        if let Some(&(number, raised_at)) = tenant.recent.get(&key)
            && at_ms.saturating_sub(raised_at) < DEDUP_WINDOW_MS
            && let Some(alert) = tenant.alerts.get_mut(&number)
        {
            alert.occurrences += 1;
            tenant.stats.deduplicated += 1;
            return None;
        }
        tenant.next += 1;
        let number = tenant.next;
        let alert_id = format!("al-{number}");
        let mut channels = intent.channels.clone();
        if !channels.contains(&Channel::Ui) {
            channels.insert(0, Channel::Ui);
        }
        // A policy's WEBHOOK notification goes to the tenant's Slack-style
        // webhook too, when one is configured.
        if channels.contains(&Channel::Webhook) && tenant.channels.contains_key(&Channel::Slack) {
            channels.push(Channel::Slack);
        }
        channels.sort();
        channels.dedup();
        let window = at_ms - at_ms % RATE_WINDOW_MS;
        let mut deliveries = Vec::with_capacity(channels.len());
        for channel in channels {
            let delivery = if channel == Channel::Ui {
                // Stored is delivered.
                tenant.stats.delivered += 1;
                delivered(channel, at_ms)
            } else if !tenant.channels.contains_key(&channel) {
                Delivery {
                    last_error: Some(format!("tenant has no {} channel configured", channel.as_str())),
                    ..pending(channel, DeliveryStatus::Skipped, at_ms)
                }
            } else {
                let slot = tenant.windows.entry((channel, window)).or_insert((0, None));
                if slot.0 < CHANNEL_BUDGET {
                    slot.0 += 1;
                    pending(channel, DeliveryStatus::Pending, at_ms)
                } else {
                    tenant.stats.rate_limited += 1;
                    // A roll-up already sent (its window closed before this
                    // late proposal committed) is not added to: a new one
                    // carries the rest, so every count is delivered.
                    let open_rollup = slot.1.filter(|n| {
                        tenant
                            .alerts
                            .get(n)
                            .is_some_and(|a| a.deliveries.iter().all(|d| d.status == DeliveryStatus::Pending))
                    });
                    let rollup = match open_rollup {
                        Some(n) => n,
                        None => {
                            tenant.next += 1;
                            let n = tenant.next;
                            slot.1 = Some(n);
                            tenant.stats.raised += 1;
                            tenant.alerts.insert(
                                n,
                                Alert {
                                    alert_id: format!("al-{n}"),
                                    tenant_id: tenant_id.to_owned(),
                                    policy_id: None,
                                    signal: None,
                                    tier: "ROLLUP".to_owned(),
                                    run_id: None,
                                    value: 0,
                                    threshold: 0,
                                    raised_at_ms: at_ms,
                                    occurrences: 0,
                                    // Sent once the window has closed, with
                                    // the exact count.
                                    deliveries: vec![pending(
                                        channel,
                                        DeliveryStatus::Pending,
                                        window + RATE_WINDOW_MS,
                                    )],
                                },
                            );
                            n
                        }
                    };
                    if let Some(summary) = tenant.alerts.get_mut(&rollup) {
                        summary.occurrences += 1;
                    }
                    Delivery {
                        rolled_into: Some(format!("al-{rollup}")),
                        ..pending(channel, DeliveryStatus::RateLimited, at_ms)
                    }
                }
            };
            deliveries.push(delivery);
        }
        tenant.windows.retain(|(_, start), _| start + 2 * RATE_WINDOW_MS > at_ms);
        tenant.recent.insert(key, (number, at_ms));
        tenant.recent.retain(|_, (_, raised)| at_ms.saturating_sub(*raised) < DEDUP_WINDOW_MS);
        tenant.stats.raised += 1;
        tenant.alerts.insert(
            number,
            Alert {
                alert_id: alert_id.clone(),
                tenant_id: tenant_id.to_owned(),
                policy_id: Some(intent.policy_id.to_owned()),
                signal: Some(intent.signal.to_owned()),
                tier: intent.tier.clone(),
                run_id: intent.run_id.map(str::to_owned),
                value: intent.value,
                threshold: intent.threshold,
                raised_at_ms: at_ms,
                occurrences: 1,
                deliveries,
            },
        );
        tenant.trim();
        Some(alert_id)
    }

    /// The tenant's alerts, newest first, at most `limit`.
    pub fn list(&self, tenant_id: &str, limit: usize) -> Vec<&Alert> {
        self.tenants.get(tenant_id).map(|t| t.alerts.values().rev().take(limit).collect()).unwrap_or_default()
    }

    /// One alert.
    pub fn get(&self, tenant_id: &str, alert_id: &str) -> Option<&Alert> {
        let number = alert_id.strip_prefix("al-")?.parse::<u64>().ok()?;
        self.tenants.get(tenant_id)?.alerts.get(&number)
    }

    /// The fatigue controller's counts.
    pub fn stats(&self, tenant_id: &str) -> AlertStats {
        self.tenants.get(tenant_id).map(|t| t.stats).unwrap_or_default()
    }

    /// The tenant's configured channels.
    pub fn channels(&self, tenant_id: &str) -> Vec<&ChannelConfig> {
        self.tenants.get(tenant_id).map(|t| t.channels.values().collect()).unwrap_or_default()
    }

    /// One configured channel.
    pub fn channel(&self, tenant_id: &str, channel: Channel) -> Option<&ChannelConfig> {
        self.tenants.get(tenant_id)?.channels.get(&channel)
    }

    /// Deliveries due at `now_ms`, every tenant, oldest first, at most
    /// `limit`: `(tenant, alert id, channel)`.
    pub fn due(&self, now_ms: u64, limit: usize) -> Vec<(String, String, Channel)> {
        let mut due = Vec::new();
        for (tenant_id, tenant) in &self.tenants {
            for alert in tenant.alerts.values() {
                for d in &alert.deliveries {
                    if d.status == DeliveryStatus::Pending && d.next_attempt_ms <= now_ms {
                        due.push((tenant_id.clone(), alert.alert_id.clone(), d.channel));
                        if due.len() >= limit {
                            return due;
                        }
                    }
                }
            }
        }
        due
    }
}

impl TenantAlerts {
    /// Bounds memory: the oldest alerts with nothing pending go first.
    fn trim(&mut self) {
        while self.alerts.len() > MAX_ALERTS_PER_TENANT {
            let settled = self
                .alerts
                .iter()
                .find(|(_, a)| a.deliveries.iter().all(|d| d.status != DeliveryStatus::Pending))
                .map(|(n, _)| *n);
            match settled {
                Some(n) => {
                    self.alerts.remove(&n);
                }
                None => break,
            }
        }
    }
}

fn pending(channel: Channel, status: DeliveryStatus, next_attempt_ms: u64) -> Delivery {
    Delivery {
        channel,
        status,
        attempts: 0,
        next_attempt_ms,
        last_error: None,
        delivered_at_ms: None,
        rolled_into: None,
    }
}

fn delivered(channel: Channel, at_ms: u64) -> Delivery {
    Delivery { delivered_at_ms: Some(at_ms), ..pending(channel, DeliveryStatus::Delivered, at_ms) }
}

/// Backoff after failed attempt `failed + 1`: 1 s, 2 s, 4 s … capped at
/// 60 s.
pub fn backoff_ms(failed: u32) -> u64 {
    1_000u64.saturating_mul(1u64 << failed.min(6)).min(60_000)
}

/// `SET_ALERT_CHANNEL`.
pub(crate) fn set_alert_channel(
    domain: &mut Domain,
    tenant_id: &str,
    channel: Channel,
    target: &str,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    match channel {
        Channel::Ui => errors.push(FieldError::new("channel", "UI needs no configuration")),
        Channel::Webhook | Channel::Slack => {
            if !(target.starts_with("https://") || target.starts_with("http://")) || target.len() > 2_000 {
                errors.push(FieldError::new("target", "must be an http(s) URL of at most 2000 characters"));
            }
        }
        Channel::Email => {
            if let Err(why) = email_recipients(target) {
                errors.push(FieldError::new("target", why));
            }
        }
    }
    Refusal::check(errors)?;
    let tenant = domain.alerts.tenants.entry(tenant_id.to_owned()).or_default();
    let version = tenant.channels.get(&channel).map_or(1, |c| c.version + 1);
    // A webhook URL can be a credential (Slack's is): the ledger keeps its
    // host and a hash, never the URL.
    let before = tenant.channels.get(&channel).map(|c| to_json(&c.redacted()));
    let config = ChannelConfig { channel, target: target.to_owned(), version };
    let after = to_json(&config.redacted());
    let result = to_json(&config);
    tenant.channels.insert(channel, config);
    let mut effect = Effect::new(
        AuditAction::AlertChannelSet,
        format!("alert channel {} of tenant `{tenant_id}` set (version {version})", channel.as_str()),
    )
    .after(after.clone())
    .result(result);
    if let Some(before) = before {
        effect = effect.before(before);
    }
    Ok(effect)
}

/// Most recipients of one EMAIL channel.
pub const MAX_EMAIL_RECIPIENTS: usize = 10;

/// The recipients of an EMAIL channel's target: comma-separated
/// `local@domain` addresses, at most [`MAX_EMAIL_RECIPIENTS`]. Deliberately
/// strict (printable ASCII, no quoting, display names, comments or
/// whitespace), so nothing a tenant writes can add a header or a recipient
/// the target does not show.
pub fn email_recipients(target: &str) -> Result<Vec<&str>, &'static str> {
    const SHAPE: &str =
        "must be 1 to 10 comma-separated addresses like ops@example.com (printable ASCII, no display names)";
    let recipients: Vec<&str> = target.split(',').map(str::trim).collect();
    if recipients.is_empty() || recipients.len() > MAX_EMAIL_RECIPIENTS {
        return Err(SHAPE);
    }
    for address in &recipients {
        let Some((local, domain)) = address.rsplit_once('@') else { return Err(SHAPE) };
        let printable = |part: &str| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@".contains(&b))
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with(['.', '-'])
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if address.len() > 254 || local.len() > 64 || !printable(local) || !domain_ok {
            return Err(SHAPE);
        }
    }
    Ok(recipients)
}

/// `RECORD_ALERT_DELIVERY`: the dispatcher's outcome for one channel.
pub(crate) fn record_alert_delivery(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    alert_id: &str,
    channel: Channel,
    error: Option<&str>,
) -> Result<Effect, Refusal> {
    let tenant = domain
        .alerts
        .tenants
        .get_mut(tenant_id)
        .ok_or_else(|| Refusal::not_found(format!("tenant `{tenant_id}` has no alerts")))?;
    let number = alert_id.strip_prefix("al-").and_then(|n| n.parse::<u64>().ok());
    let Some(alert) = number.and_then(|n| tenant.alerts.get_mut(&n)) else {
        return Err(Refusal::not_found(format!("unknown alert `{alert_id}`")));
    };
    let Some(delivery) = alert.deliveries.iter_mut().find(|d| d.channel == channel) else {
        return Err(Refusal::not_found(format!("alert `{alert_id}` has no {} delivery", channel.as_str())));
    };
    if delivery.status != DeliveryStatus::Pending {
        // A second dispatcher's report (leader change): nothing to do.
        return Ok(Effect::new(
            AuditAction::AlertDelivery,
            format!("alert `{alert_id}` {} already settled", channel.as_str()),
        ));
    }
    delivery.attempts += 1;
    let detail = match error {
        None => {
            delivery.status = DeliveryStatus::Delivered;
            delivery.delivered_at_ms = Some(ctx.at_ms);
            delivery.last_error = None;
            tenant.stats.delivered += 1;
            format!("alert `{alert_id}` delivered on {}", channel.as_str())
        }
        Some(e) if delivery.attempts >= MAX_ATTEMPTS => {
            delivery.status = DeliveryStatus::DeadLetter;
            delivery.last_error = Some(e.chars().take(500).collect());
            tenant.stats.dead_lettered += 1;
            format!(
                "alert `{alert_id}` dead-lettered on {} after {} attempts: {e}",
                channel.as_str(),
                delivery.attempts
            )
        }
        Some(e) => {
            delivery.next_attempt_ms = ctx.at_ms.saturating_add(backoff_ms(delivery.attempts - 1));
            delivery.last_error = Some(e.chars().take(500).collect());
            format!("alert `{alert_id}` {} attempt {} failed: {e}", channel.as_str(), delivery.attempts)
        }
    };
    let after = to_json(&*delivery);
    Ok(Effect::new(AuditAction::AlertDelivery, detail).result(after))
}

#[cfg(test)]
mod tests;
