//! The alert fatigue controller and durable delivery state (GAP-049,
//! GAP-050).

use serde_json::json;

use crate::activity::IngestRecord;
use crate::alerts::{CHANNEL_BUDGET, Channel, DeliveryStatus, MAX_ATTEMPTS, RATE_WINDOW_MS};
use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn control_event(id: &str, policy: &str, tier: u8) -> IngestRecord {
    IngestRecord {
        record_id: id.into(),
        json: json!({
            "record_id": id, "kind": "CONTROL_EVENT", "run_id": "run-1", "at_ms": 1_000,
            "decision": {"alerts": [{
                "policy_id": policy, "kind": "TOKENS", "level": {"level": "NEAR", "tier": tier},
                "value": 800, "threshold": 1000, "channels": ["UI", "WEBHOOK"],
            }]},
        })
        .to_string()
        .into(),
    }
}

fn webhook(h: &mut Harness) {
    h.ok(
        &admin(ACME),
        Command::SetAlertChannel {
            tenant_id: ACME.into(),
            channel: Channel::Webhook,
            target: "https://hooks.example.com/aos".into(),
        },
    );
}

#[test]
fn a_storm_of_ten_thousand_alerts_yields_bounded_deliveries_and_exact_counts() {
    let mut h = Harness::with_agents();
    webhook(&mut h);
    // 5,000 repeats of one (policy, signal, tier) and 5,000 distinct ones.
    let records: Vec<IngestRecord> = (0..10_000)
        .map(|i| {
            let policy = if i % 2 == 0 { "pol-hot".to_owned() } else { format!("pol-{i}") };
            control_event(&format!("r{i}"), &policy, 80)
        })
        .collect();
    let first_ms = h.now();
    for batch in records.chunks(2_000) {
        h.ok(
            &operator(),
            Command::IngestRecords { edge_agent_id: "ea-acme".into(), records: batch.to_vec() },
        );
    }
    let last_ms = h.now() - 1_000;
    assert_eq!(first_ms / RATE_WINDOW_MS, last_ms / RATE_WINDOW_MS, "the storm fits one rate window");

    let stats = h.state.alerts().stats(ACME);
    assert_eq!(stats.received, 10_000);
    assert_eq!(stats.deduplicated, 4_999, "pol-hot repeats fold into its first alert");
    let distinct = 5_001;
    let limited = distinct - u64::from(CHANNEL_BUDGET);
    assert_eq!(stats.rate_limited, limited, "exact suppressed count");
    assert_eq!(stats.raised, distinct + 1, "the alerts plus one roll-up");
    // Webhook deliveries: the budget, plus the roll-up once its window closes.
    assert_eq!(h.state.alerts().due(last_ms, 100_000).len(), CHANNEL_BUDGET as usize);
    let after_window = (last_ms / RATE_WINDOW_MS + 1) * RATE_WINDOW_MS;
    let due = h.state.alerts().due(after_window, 100_000);
    assert_eq!(due.len(), CHANNEL_BUDGET as usize + 1);
    let rollup = h.state.alerts().list(ACME, 100_000).into_iter().find(|a| a.tier == "ROLLUP").unwrap();
    assert_eq!(rollup.occurrences, limited);
    assert!(rollup.message().contains(&limited.to_string()), "{}", rollup.message());
    let hot =
        h.state.alerts().list(ACME, 100_000).into_iter().find(|a| a.policy_id.as_deref() == Some("pol-hot"));
    assert_eq!(hot.unwrap().occurrences, 5_000);
    // Another tenant saw nothing.
    assert_eq!(h.state.alerts().stats(GLOBEX).received, 0);
}

#[test]
fn a_failing_channel_is_retried_with_backoff_then_delivered_or_dead_lettered() {
    let mut h = Harness::with_agents();
    webhook(&mut h);
    h.ok(
        &operator(),
        Command::IngestRecords {
            edge_agent_id: "ea-acme".into(),
            records: vec![control_event("r1", "pol-a", 80), control_event("r2", "pol-b", 80)],
        },
    );
    let report = |alert: &str, error: Option<&str>| Command::RecordAlertDelivery {
        tenant_id: ACME.into(),
        alert_id: alert.into(),
        channel: Channel::Webhook,
        error: error.map(str::to_owned),
    };
    // al-1: three failures, then delivered.
    for i in 0..3 {
        h.ok(&operator(), report("al-1", Some("HTTP 503")));
        let d = h.state.alerts().get(ACME, "al-1").unwrap().deliveries[1].clone();
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, i + 1));
        assert!(d.next_attempt_ms > h.now() - 1_000, "backed off");
    }
    h.ok(&operator(), report("al-1", None));
    let d = &h.state.alerts().get(ACME, "al-1").unwrap().deliveries[1];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 4));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::AlertDelivery);
    // A late duplicate report (a former leader) changes nothing.
    h.ok(&operator(), report("al-1", Some("late")));
    assert_eq!(h.state.alerts().get(ACME, "al-1").unwrap().deliveries[1].status, DeliveryStatus::Delivered);
    // al-2: dead-lettered after MAX_ATTEMPTS, with the last error kept.
    for _ in 0..MAX_ATTEMPTS {
        h.ok(&operator(), report("al-2", Some("connection refused")));
    }
    let d = &h.state.alerts().get(ACME, "al-2").unwrap().deliveries[1];
    assert_eq!(d.status, DeliveryStatus::DeadLetter);
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
    let stats = h.state.alerts().stats(ACME);
    assert_eq!((stats.delivered, stats.dead_lettered), (2 + 1, 1), "two UI deliveries and one webhook");
    // Only the control plane itself reports deliveries.
    h.rejected(&admin(ACME), report("al-1", None), RejectionCode::Forbidden);
}

#[test]
fn unconfigured_channels_are_skipped_and_channels_are_validated() {
    let mut h = Harness::with_agents();
    h.ok(
        &operator(),
        Command::IngestRecords {
            edge_agent_id: "ea-acme".into(),
            records: vec![control_event("r1", "p", 80)],
        },
    );
    let alert = h.state.alerts().get(ACME, "al-1").unwrap();
    assert_eq!(alert.deliveries[0].status, DeliveryStatus::Delivered, "UI: stored is delivered");
    assert_eq!(alert.deliveries[1].status, DeliveryStatus::Skipped);
    assert!(alert.deliveries[1].last_error.as_deref().unwrap().contains("no WEBHOOK channel"));
    assert!(h.state.alerts().due(u64::MAX, 10).is_empty());
    let set = |channel, target: &str| Command::SetAlertChannel {
        tenant_id: ACME.into(),
        channel,
        target: target.into(),
    };
    h.rejected(&admin(ACME), set(Channel::Webhook, "ftp://x"), RejectionCode::InvalidInput);
    // Email recipients are plain addresses: nothing that could smuggle a
    // header or a hidden recipient.
    for bad in [
        "",
        "ops",
        "ops@localhost",
        "ops@example.com\r\nBcc: evil@example.net",
        "Ops <ops@example.com>",
        "ops@example.com;evil@example.net",
        "a@example.com,b@example.com,c@example.com,d@example.com,e@example.com,f@example.com,g@example.com,h@example.com,i@example.com,j@example.com,k@example.com",
    ] {
        h.rejected(&admin(ACME), set(Channel::Email, bad), RejectionCode::InvalidInput);
    }
    h.ok(&admin(ACME), set(Channel::Email, "ops@example.com, sre-team@ops.example.org"));
    let entry = h.state.audit().last().unwrap();
    let recorded = format!("{:?} {:?}", entry.before, entry.after);
    assert!(recorded.contains("…@example.com") && !recorded.contains("sre-team"), "{recorded}");
    h.rejected(&admin(ACME), set(Channel::Ui, "x"), RejectionCode::InvalidInput);
    h.rejected(&sre(ACME), set(Channel::Slack, "https://hooks.slack.example/T1"), RejectionCode::Forbidden);
    h.ok(&admin(ACME), set(Channel::Slack, "https://hooks.slack.example/T1/secret-path"));
    h.ok(&admin(ACME), set(Channel::Slack, "https://hooks.slack.example/T2/secret-path"));
    assert_eq!(h.state.alerts().channel(ACME, Channel::Slack).unwrap().version, 2);
    // The ledger keeps the host, never the URL's secret path.
    let entry = h.state.audit().last().unwrap();
    let recorded = format!("{:?} {:?}", entry.before, entry.after);
    assert!(recorded.contains("hooks.slack.example") && !recorded.contains("secret-path"), "{recorded}");
    // A WEBHOOK notification now reaches the Slack channel too.
    h.ok(
        &operator(),
        Command::IngestRecords {
            edge_agent_id: "ea-acme".into(),
            records: vec![control_event("r2", "q", 80)],
        },
    );
    let alert = h.state.alerts().get(ACME, "al-2").unwrap();
    let slack = alert.deliveries.iter().find(|d| d.channel == Channel::Slack).unwrap();
    assert_eq!(slack.status, DeliveryStatus::Pending);
}

#[test]
fn a_late_proposal_after_the_roll_up_was_sent_gets_a_new_roll_up() {
    let mut h = Harness::with_agents();
    webhook(&mut h);
    let records: Vec<IngestRecord> =
        (0..25).map(|i| control_event(&format!("r{i}"), &format!("pol-{i}"), 80)).collect();
    h.ok(&operator(), Command::IngestRecords { edge_agent_id: "ea-acme".into(), records });
    let first = h.state.alerts().list(ACME, 100).into_iter().find(|a| a.tier == "ROLLUP").unwrap().clone();
    assert_eq!(first.occurrences, 5);
    h.ok(
        &operator(),
        Command::RecordAlertDelivery {
            tenant_id: ACME.into(),
            alert_id: first.alert_id.clone(),
            channel: Channel::Webhook,
            error: None,
        },
    );
    // More in the same window, committed after the roll-up went out.
    let late: Vec<IngestRecord> =
        (25..28).map(|i| control_event(&format!("r{i}"), &format!("pol-{i}"), 80)).collect();
    h.ok(&operator(), Command::IngestRecords { edge_agent_id: "ea-acme".into(), records: late });
    let rollups: Vec<u64> = h
        .state
        .alerts()
        .list(ACME, 100)
        .into_iter()
        .filter(|a| a.tier == "ROLLUP")
        .map(|a| a.occurrences)
        .collect();
    assert_eq!(rollups, [3, 5], "the sent one keeps its count; the rest go in a new one");
    assert_eq!(h.state.alerts().stats(ACME).rate_limited, 8);
}
