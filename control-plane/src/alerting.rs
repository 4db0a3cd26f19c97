//! The alert dispatcher (issue 8, EVENT path): the leader delivers the
//! pending channel deliveries the state machine's fatigue controller
//! accepted ([`aos_cp_state::alerts`]) and commits each outcome through
//! Raft, so a delivery survives a leader change and is retried with
//! backoff until delivered or dead-lettered — never silently dropped
//! (GAP-050). Nothing here is on the enforcement path (INV-001): edge
//! agents enforce before their records even reach the control plane.
//!
//! Webhooks are JSON POSTs with `X-AOS-Delivery` (`<alert>:<channel>`,
//! stable across retries, so receivers can de-duplicate the rare repeat
//! after a leader change), `X-AOS-Timestamp` and
//! `X-AOS-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
//! under the tenant's webhook secret. The secret is derived from the
//! cluster CA key and the channel's version (see [`webhook_secret`]): every
//! node computes the same one and none stores it. Slack channels get a
//! Slack-compatible `{"text": …}` body (the URL is the secret). Email goes
//! through the operator's SMTP relay ([`crate::email`]); on a leader
//! without one it fails with that reason, is retried (the next leader may
//! have one) and is dead-lettered visibly in the end.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aos_cp_state::{Alert, Channel, ChannelConfig, Command, Proposal};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::task::JoinSet;

use crate::bootstrap::system_actor;
use crate::node::{LeaderContact, Node};
use crate::write::{Consistency, propose, read_barrier};

/// How often the leader looks for due deliveries.
const TICK: Duration = Duration::from_millis(250);
/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
/// Longest one delivery (HTTP request, SMTP conversation) may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before trying again a delivery whose outcome could not be committed.
const COMMIT_RETRY: Duration = Duration::from_secs(2);

/// The tenant's webhook signing secret for channel version `version`, hex:
/// shown to the tenant admin when the channel is set, used by every node
/// to sign deliveries.
pub fn webhook_secret(node: &Node, tenant_id: &str, version: u64) -> Option<String> {
    let ca = node.ca()?;
    Some(hex::encode(ca.derive_secret(&format!("aos.webhook.v1\0{tenant_id}\0{version}"))))
}

/// `sha256=<hex>` over `<timestamp>.<body>`.
pub fn signature(secret_hex: &str, timestamp: &str, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_hex.as_bytes()).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

type Key = (String, String, Channel);

/// Runs until `stop` flips to true.
pub async fn run(node: Node, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Keys being delivered, by task, so a task that dies still frees its key.
    let mut in_flight: HashMap<tokio::task::Id, Key> = HashMap::new();
    // After an outcome that could not be committed: not before this instant.
    let mut hold: HashMap<Key, tokio::time::Instant> = HashMap::new();
    let mut deliveries: JoinSet<Result<(), String>> = JoinSet::new();
    // The term whose earlier entries this node has applied: a new leader
    // first catches up, so it does not resend what the previous leader
    // already recorded as delivered.
    let mut caught_up_term = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            Some(done) = deliveries.join_next_with_id(), if !deliveries.is_empty() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, outcome),
                    Err(e) => (e.id(), Err(format!("delivery task failed: {e}"))),
                };
                if let Some(key) = in_flight.remove(&id)
                    && !commit(&node, &key, outcome).await
                {
                    hold.insert(key, tokio::time::Instant::now() + COMMIT_RETRY);
                }
                continue;
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        // Only the leader delivers; a boot-failed leader too (webhooks need
        // the CA, not the snapshot signing key), so deliveries never stall.
        if node.leader_contact() != LeaderContact::Usable(node.id()) {
            continue;
        }
        let term = node.raft().metrics().borrow().current_term;
        if term != caught_up_term {
            if let Err(e) = read_barrier(&node, Consistency::Linearizable).await {
                tracing::debug!(message = "alert dispatcher waiting to catch up", error = %e);
                continue;
            }
            caught_up_term = term;
        }
        let room = CONCURRENCY.saturating_sub(in_flight.len());
        if room == 0 {
            continue;
        }
        let now = tokio::time::Instant::now();
        hold.retain(|_, until| *until > now);
        let busy: HashSet<&Key> = in_flight.values().chain(hold.keys()).collect();
        let due = node.state().read(|s| s.0.alerts().due(crate::now_ms(), CONCURRENCY * 4));
        let fresh: Vec<Key> = due.into_iter().filter(|k| !busy.contains(k)).take(room).collect();
        for key in fresh {
            let Some((alert, config)) = node.state().read(|s| {
                let alerts = s.0.alerts();
                Some((alerts.get(&key.0, &key.1)?.clone(), alerts.channel(&key.0, key.2).cloned()))
            }) else {
                continue;
            };
            let secret = config.as_ref().and_then(|c| webhook_secret(&node, &key.0, c.version));
            let allow_private = node.alert_private_targets();
            let mailer = node.mailer().cloned();
            let channel = key.2;
            let handle = deliveries.spawn(async move {
                if channel == Channel::Email {
                    return send_email(&alert, config.as_ref(), mailer.as_deref()).await;
                }
                deliver(&alert, channel, config.as_ref(), secret.as_deref(), allow_private).await
            });
            in_flight.insert(handle.id(), key);
        }
    }
}

/// Commits one outcome; `false` when it could not be (the delivery stays
/// `PENDING` and is tried again after [`COMMIT_RETRY`]).
async fn commit(node: &Node, key: &Key, outcome: Result<(), String>) -> bool {
    if let Err(e) = &outcome {
        tracing::warn!(message = "alert delivery failed", tenant = %key.0, alert_id = %key.1, channel = key.2.as_str(), error = %e);
    }
    let proposal = Proposal {
        request_id: format!("alert-delivery-{}-{}-{}-{}", key.0, key.1, key.2.as_str(), crate::now_ms()),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: Command::RecordAlertDelivery {
            tenant_id: key.0.clone(),
            alert_id: key.1.clone(),
            channel: key.2,
            error: outcome.err(),
        },
    };
    match propose(node, proposal).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(message = "cannot record an alert delivery", alert_id = %key.1, error = %e);
            false
        }
    }
}

async fn send_email(
    alert: &Alert,
    config: Option<&ChannelConfig>,
    mailer: Option<&crate::email::Mailer>,
) -> Result<(), String> {
    let config = config.ok_or("the tenant's EMAIL channel is no longer configured")?;
    let mailer = mailer.ok_or("this control-plane node has no SMTP relay configured (--smtp-url)")?;
    let recipients = aos_cp_state::email_recipients(&config.target)?;
    mailer.send_alert(alert, &recipients).await
}

async fn deliver(
    alert: &Alert,
    channel: Channel,
    config: Option<&ChannelConfig>,
    secret: Option<&str>,
    allow_private: bool,
) -> Result<(), String> {
    let config =
        config.ok_or_else(|| format!("the tenant's {} channel is no longer configured", channel.as_str()))?;
    let delivery_id = format!("{}:{}", alert.alert_id, channel.as_str());
    let (body, signed) = match channel {
        Channel::Webhook => {
            let body = json!({
                "delivery_id": delivery_id,
                "tenant_id": alert.tenant_id,
                "message": alert.message(),
                "alert": alert,
            });
            (body, true)
        }
        Channel::Slack => (json!({ "text": format!("[AOS] {}", alert.message()) }), false),
        Channel::Email | Channel::Ui => return Err(format!("{} is not an HTTP channel", channel.as_str())),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let timestamp = (crate::now_ms() / 1000).to_string();
    let signature = if signed {
        let secret = secret.ok_or("this node has no cluster CA key to sign webhooks with")?;
        Some(signature(secret, &timestamp, &body).ok_or("cannot sign the webhook")?)
    } else {
        None
    };
    let url = config.target.clone();
    tokio::task::spawn_blocking(move || {
        check_target(&url, allow_private)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DELIVERY_TIMEOUT))
            // A redirect could lead anywhere, internal addresses included.
            .max_redirects(0)
            .build()
            .into();
        let mut request = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "aos-control-plane")
            .header("X-AOS-Delivery", &delivery_id)
            .header("X-AOS-Timestamp", &timestamp);
        if let Some(sig) = &signature {
            request = request.header("X-AOS-Signature", sig);
        }
        match request.send(&body[..]) {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            // The URL may be a credential (Slack's is): never in the error.
            Err(e) => Err(e.to_string().replace(&url, "<target>")),
        }
    })
    .await
    .map_err(|e| format!("delivery task failed: {e}"))?
}

/// Refuses targets that resolve to loopback, private, link-local,
/// shared, unspecified or multicast addresses unless the operator allowed
/// them (`--alert-private-targets`): a tenant must not be able to make the
/// leader call services inside the cluster's network. The check resolves
/// the name itself; the connection resolves it again, so a DNS answer that
/// changes in between is not covered.
fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| "the target is not a valid URL".to_owned())?;
    let host = uri.host().ok_or("the target URL has no host")?;
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    aos_connectors::net::check_host(host, port, false).map_err(|e| format!("the target: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_depend_on_secret_timestamp_and_body() {
        let a = signature("s1", "100", b"{}").unwrap();
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64, "{a}");
        assert_ne!(a, signature("s2", "100", b"{}").unwrap());
        assert_ne!(a, signature("s1", "101", b"{}").unwrap());
        assert_ne!(a, signature("s1", "100", b"{ }").unwrap());
        assert_eq!(a, signature("s1", "100", b"{}").unwrap());
    }

    #[test]
    fn internal_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/x",
            "http://192.168.0.10/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9000/x",
            "http://[fd00::1]/x",
            "http://100.64.0.1/x",
        ] {
            let err = check_target(url, false).unwrap_err();
            assert!(err.contains("non-public"), "{url}: {err}");
            assert!(check_target(url, true).is_ok(), "{url}");
        }
        assert!(aos_connectors::net::is_public("93.184.216.34".parse().unwrap()));
        assert!(check_target("not a url", false).is_err());
    }
}
