//! The edge agent as a process: boot guard, same-step STOP and KILL,
//! PAUSE with acknowledgement, atomic counters under concurrency, stale
//! fail-closed snapshots, durability across `kill -9`, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::{AgentProc, TENANT, call, now_ms, signed_snapshot, wait_for};

const POLICIES: &str = r#"
api_version: aos/v1
policies:
  - id: pol-run-tokens
    name: Per-run token budget
    status: ACTIVE
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits:
      - { signal: TOKENS, max: 1000, window: PER_RUN }
    alerts: { near_threshold: true, tiers: [80], notify: [UI] }
    actions: { on_near: WARN, on_breach: STOP }
    failure_mode: fail_closed
  - id: pol-kill-bot
    name: kill-bot session tokens
    status: ACTIVE
    scope: { type: AGENT, ids: [kill-bot] }
    monitors: { tokens: true }
    limits:
      - { signal: TOKENS, max: 500, window: PER_SESSION }
    actions: { on_breach: KILL }
  - id: pol-pause-bot
    name: pause-bot session cost
    status: ACTIVE
    scope: { type: AGENT, ids: [pause-bot] }
    monitors: { cost: true }
    limits:
      - { signal: COST_USD, max: 1.00, window: PER_SESSION }
    actions: { on_breach: PAUSE, requires_ack: true }
"#;

fn snapshot_file(dir: &std::path::Path, not_after_ms: u64) -> PathBuf {
    let path = dir.join("snapshot.bin");
    std::fs::write(&path, signed_snapshot(TENANT, 1, not_after_ms, POLICIES)).unwrap();
    path
}

fn agent_with_policies(dir: &std::path::Path) -> AgentProc {
    let file = snapshot_file(dir, now_ms() + 3_600_000);
    AgentProc::start(dir, Some(file))
}

fn step(agent: &AgentProc, run: &str, tokens: u64) -> (u16, Value) {
    agent.post(&format!("/api/v1/runs/{run}/steps"), json!({ "estimated_tokens": tokens }))
}

fn usage(agent: &AgentProc, run: &str, step_id: &str, body: Value) -> (u16, Value) {
    agent.post(&format!("/api/v1/runs/{run}/steps/{step_id}/usage"), body)
}

#[test]
fn the_boot_guard_refuses_runs_until_a_valid_snapshot_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start(dir.path(), None);
    let (status, health) = agent.get("/health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["components"]["boot_guard"]["validated"], false);
    let (status, body) = agent.post("/api/v1/runs", json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("BOOT_GUARD")), "{body}");

    // A tampered file is refused; the guard stays up.
    let mut bytes = signed_snapshot(TENANT, 1, now_ms() + 3_600_000, POLICIES);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = dir.path().join("tampered.bin");
    std::fs::write(&tampered, &bytes).unwrap();
    agent.snapshot_file = Some(tampered);
    agent.restart();
    assert_eq!(agent.post("/api/v1/runs", json!({})).0, 503);
    // Another tenant's snapshot too.
    let other = dir.path().join("other.bin");
    std::fs::write(&other, signed_snapshot("globex", 1, now_ms() + 3_600_000, POLICIES)).unwrap();
    agent.snapshot_file = Some(other);
    agent.restart();
    assert_eq!(agent.post("/api/v1/runs", json!({})).0, 503);

    agent.snapshot_file = Some(snapshot_file(dir.path(), now_ms() + 3_600_000));
    agent.restart();
    let (status, health) = agent.get("/health");
    assert_eq!((status, &health["components"]["snapshot"]["version"]), (200, &json!(1)), "{health}");
    agent.start_run(json!({}));
    // Loaded from disk on the next start, no file needed.
    agent.snapshot_file = None;
    agent.restart();
    agent.start_run(json!({}));
}

#[test]
fn a_token_limit_stops_the_breaching_step_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({"agent_id": "research-bot", "session_id": "s-1"}));
    let mut used = 0;
    for _ in 0..2 {
        let (status, answer) = step(&agent, &run, 400);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["allowed"], true, "{answer}");
        let step_id = answer["step_id"].as_str().unwrap();
        let (status, answer) = usage(
            &agent,
            &run,
            step_id,
            json!({"input_tokens": 300, "output_tokens": 100, "cost_usd": 0.01}),
        );
        assert_eq!(status, 200, "{answer}");
        used += 400;
    }
    // 800 used; a third 400-token step would reach 1200 > 1000: STOP in
    // this very step.
    let (status, answer) = step(&agent, &run, 400);
    assert_eq!(status, 200);
    assert_eq!(
        (answer["allowed"].as_bool(), answer["run_status"].as_str()),
        (Some(false), Some("failed_policy"))
    );
    assert_eq!(answer["decision"]["outcome"], "STOP");
    assert_eq!(answer["decision"]["winning_policy"]["policy_id"], "pol-run-tokens");
    assert!(answer["reasons"][0].as_str().unwrap().contains("pol-run-tokens"), "{answer}");
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["termination_reason"], "BUDGET_EXCEEDED", "{view}");
    assert_eq!(view["usage"]["tokens"], used);
    // No further step is admitted.
    let (status, body) = step(&agent, &run, 1);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("RUN_ENDED")), "{body}");
}

#[test]
fn concurrent_steps_of_one_run_never_overshoot_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({}));
    let url = agent.url(&format!("/api/v1/runs/{run}/steps"));
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| call("POST", &url, Some(json!({"estimated_tokens": 100}))).1))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed = answers.iter().filter(|a| a["allowed"] == true).count();
    let stopped = answers.iter().filter(|a| a["decision"]["outcome"] == "STOP").count();
    let refused = answers.iter().filter(|a| a["error"]["code"] == "RUN_ENDED").count();
    // Each admitted step reserved 100 of the 1000: exactly 10 fit, one
    // crosses and stops the run, the rest find it ended.
    let outcomes: Vec<&str> = answers
        .iter()
        .map(|a| a["decision"]["outcome"].as_str().or(a["error"]["code"].as_str()).unwrap_or("?"))
        .collect();
    assert_eq!(allowed, 10, "{outcomes:?}");
    assert_eq!(stopped, 1);
    assert_eq!(allowed + stopped + refused, 64);
}

#[test]
fn kill_ends_the_run_and_releases_everything_waiting_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({"agent_id": "kill-bot", "session_id": "s-kill"}));
    let (_, first) = step(&agent, &run, 300);
    assert_eq!(first["allowed"], true, "{first}");
    let waiter = {
        let url = agent.url(&format!("/api/v1/runs/{run}/cancellation?wait_ms=60000"));
        std::thread::spawn(move || call("GET", &url, None))
    };
    // Whether the waiter is already blocked or arrives after the kill, it
    // must answer `cancelled: true` (a timeout would answer false).
    let (_, killed) = step(&agent, &run, 300);
    assert_eq!(killed["decision"]["outcome"], "KILL", "{killed}");
    assert_eq!(killed["run_status"], "failed_policy");
    let (status, waited) = waiter.join().unwrap();
    assert_eq!((status, waited["cancelled"].as_bool()), (200, Some(true)), "{waited}");
    // The open first step may still report: the call happened.
    let step_id = first["step_id"].as_str().unwrap();
    let (status, late) = usage(&agent, &run, step_id, json!({"input_tokens": 100, "output_tokens": 100}));
    assert_eq!(status, 200, "{late}");
    assert_eq!(late["run_status"], "failed_policy");
    let (status, body) = step(&agent, &run, 1);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("RUN_ENDED")));
}

#[test]
fn a_pause_needs_an_acknowledgement_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({"agent_id": "pause-bot", "session_id": "s-pause"}));
    let (_, answer) = step(&agent, &run, 10);
    let step_id = answer["step_id"].as_str().unwrap().to_owned();
    let (_, answer) =
        usage(&agent, &run, &step_id, json!({"input_tokens": 5, "output_tokens": 5, "cost_usd": 1.5}));
    assert_eq!(
        (answer["decision"]["outcome"].as_str(), answer["run_status"].as_str()),
        (Some("PAUSE"), Some("paused"))
    );
    assert_eq!(answer["decision"]["requires_ack"], true);
    let (status, body) = step(&agent, &run, 10);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("RUN_PAUSED")));
    let (status, body) = agent.post(&format!("/api/v1/runs/{run}/resume"), json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("acknowledged_by"), "{body}");
    let (status, body) =
        agent.post(&format!("/api/v1/runs/{run}/resume"), json!({"acknowledged_by": "alice"}));
    assert_eq!((status, body["status"].as_str()), (200, Some("running")), "{body}");
}

#[test]
fn an_expired_snapshot_with_fail_closed_policies_stops_new_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = snapshot_file(dir.path(), now_ms() + 2_000);
    let mut agent = AgentProc::start(dir.path(), Some(file));
    agent.start_run(json!({}));
    wait_for("the snapshot to expire", Duration::from_secs(10), || {
        let (_, health) = agent.get("/health");
        (health["components"]["snapshot"]["status"] == "stale").then_some(())
    });
    let (status, body) = agent.post("/api/v1/runs", json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("STALE_SNAPSHOT")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("pol-run-tokens"), "{body}");
    // After a restart the persisted snapshot is still authentic, still
    // stale: same answer, and health says why.
    agent.snapshot_file = None;
    agent.restart();
    let (status, health) = agent.get("/health");
    assert_eq!(status, 200);
    assert_eq!(health["components"]["snapshot"]["status"], "stale", "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(agent.post("/api/v1/runs", json!({})).0, 503);
}

#[test]
fn nothing_acknowledged_is_lost_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({"run_id": "run-durable", "session_id": "s-d"}));
    for _ in 0..3 {
        let (_, answer) = step(&agent, &run, 100);
        let step_id = answer["step_id"].as_str().unwrap().to_owned();
        let (status, _) = usage(
            &agent,
            &run,
            &step_id,
            json!({"input_tokens": 60, "output_tokens": 40, "prompt": "hello"}),
        );
        assert_eq!(status, 200);
    }
    let (_, open) = step(&agent, &run, 100);
    assert_eq!(open["allowed"], true);
    let (_, before) = agent.get("/health");
    let pending_before = before["components"]["outbox"]["pending_records"].as_u64().unwrap();
    assert!(pending_before >= 4, "startup + snapshot + 3 LLM run records: {before}");

    agent.kill();
    agent.snapshot_file = None;
    agent.restart();
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["usage"]["tokens"], 300, "every reported call survives: {view}");
    // The last admission produced no record and was not written (the run
    // is written with a step's usage report): it is gone after the kill.
    assert_eq!(view["open_steps"].as_array().map(Vec::len), Some(0), "{view}");
    assert_eq!(view["steps"], 3, "{view}");
    let (_, after) = agent.get("/health");
    assert_eq!(after["components"]["outbox"]["pending_records"], pending_before + 1, "+1 STARTUP record");
    // Its usage report is still taken (as a late report for a step of the
    // previous boot), once.
    let open_step = open["step_id"].as_str().unwrap();
    let (status, reported) = usage(&agent, &run, open_step, json!({"input_tokens": 50, "output_tokens": 50}));
    assert_eq!(status, 200, "{reported}");
    let (status, _) = usage(&agent, &run, open_step, json!({"input_tokens": 50, "output_tokens": 50}));
    assert_eq!(status, 404, "a second report of the same step is refused");
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!((view["usage"]["tokens"].as_u64(), view["steps"].as_u64()), (Some(400), Some(4)), "{view}");
    // 400 used + 700 breaches the 1,000-token budget.
    let (_, answer) = step(&agent, &run, 700);
    assert_eq!(answer["decision"]["outcome"], "STOP", "{answer}");
    // A step id of this boot that was never admitted is not a late report.
    let (status, _) = usage(&agent, &run, "step-e99-0000", json!({"input_tokens": 1}));
    assert_eq!(status, 404);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({}));
    let (status, body) =
        agent.post(&format!("/api/v1/runs/{run}/steps"), Value::String("{\"estimated_tokens\": ".into()));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    let (status, body) =
        agent.post(&format!("/api/v1/runs/{run}/steps"), json!({"estimated_tokens": "many"}));
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("estimated_tokens"), "{body}");
    let (status, body) =
        agent.post(&format!("/api/v1/runs/{run}/steps"), json!({"estimated_cost_usd": -1.0}));
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("estimated_cost_usd"), "{body}");
    let (status, body) = agent.post(&format!("/api/v1/runs/{run}/steps"), json!({"tokens": 5}));
    assert_eq!(status, 400, "unknown fields are refused: {body}");
    let (status, _) = step(&agent, "run-nope", 1);
    assert_eq!(status, 404);
    let (status, body) = usage(&agent, &run, "step-nope", json!({}));
    assert_eq!(status, 404, "{body}");
    let (status, body) = agent.post(&format!("/api/v1/runs/{run}/end"), json!({"status": "running"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = agent.post("/api/v1/runs", json!({"run_id": "a/b"}));
    assert_eq!(status, 400, "{body}");
    // None of it touched the run.
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!((view["steps"].as_u64(), view["status"].as_str()), (Some(0), Some("running")), "{view}");
    let (status, body) = call("POST", &agent.url(&format!("/api/v1/runs/{run}/end")), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "a body is required: {body}"
    );
    let (status, ended) = agent.post(&format!("/api/v1/runs/{run}/end"), json!({"status": "succeeded"}));
    assert_eq!((status, ended["termination_reason"].as_str()), (200, Some("COMPLETED")));
}

#[test]
fn a_run_with_no_step_for_too_long_is_ended_by_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let file = snapshot_file(dir.path(), now_ms() + 3_600_000);
    let agent = AgentProc::start_with(
        dir.path(),
        Some(file),
        &["--stale-run-after-secs", "1", "--stale-run-schedule", "* * * * * *"],
    );
    let run = agent.start_run(json!({}));
    let (_, open) = step(&agent, &run, 900);
    assert_eq!(open["allowed"], true);
    let view = wait_for("the stale run to be ended", Duration::from_secs(15), || {
        let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
        (view["status"] == "failed").then_some(view)
    });
    assert_eq!(view["termination_reason"], "TIMEOUT", "{view}");
    assert_eq!(view["open_steps"].as_array().unwrap().len(), 0, "its reservation is released");
    let (_, health) = agent.get("/health");
    let job = &health["components"]["scheduler"]["jobs"]["stale_runs"];
    assert!(job["runs"].as_u64().unwrap() >= 1 && job["last_error"].is_null(), "{health}");
    // The released reservation no longer counts: a new run's 900 fits.
    let other = agent.start_run(json!({}));
    let (_, answer) = step(&agent, &other, 900);
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[test]
fn a_subscriber_that_never_reads_does_not_slow_steps() {
    // In-process: the engine over a real store, one subscriber that never
    // reads, and a stream of alert-producing steps.
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Its event buffer is small (8), so a few dozen steps overflow the
        // stuck subscriber.
        let engine = engine_in(&dir.path().join("store")).await;
        let stuck_subscriber = engine.events().subscribe();
        let steps: u64 = 40;
        for i in 0..steps {
            let run = engine.start_run(aos_edge_agent::engine::StartRun::default()).await.unwrap();
            let run_id = run["run_id"].as_str().unwrap().to_owned();
            // 850 of 1000 tokens crosses the 80 % tier: one alert per step.
            let answer = admit(&engine, &run_id, 850).await;
            assert!(answer.allowed, "step {i}");
        }
        let (published, subscribers, _) = engine.events().stats();
        assert_eq!(subscribers, 1);
        assert!(published >= steps, "every step published its alert ({published})");
        // The stuck subscriber was overrun, not waited for.
        let mut stuck = stuck_subscriber;
        assert!(matches!(stuck.try_recv(), Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))));
    });
}

/// Opens the engine over the store in `dir` (waiting out the database
/// lock of a handle just dropped), with an event buffer of 8 and, on first
/// use, the snapshot of `POLICIES`.
/// A pre-step check estimating `tokens`, answered.
async fn admit(
    engine: &aos_edge_agent::engine::Engine,
    run_id: &str,
    tokens: u64,
) -> aos_edge_agent::engine::StepAnswer {
    let step = aos_edge_agent::engine::StepRequest { estimated_tokens: tokens, ..Default::default() };
    engine.pre_step(run_id, step).await.unwrap()
}

/// What the delivery loop does once the control plane acks every pending
/// record: the checkpoint, then the records leave the outbox.
async fn deliver_everything(engine: &aos_edge_agent::engine::Engine) {
    let pending = engine.store().pending_raw(usize::MAX).unwrap();
    let bytes = pending.iter().map(|p| p.json.len() as u64).sum();
    engine.outbox_delivered(pending.last().unwrap().next, pending.len() as u64, bytes).await.unwrap();
}

async fn engine_in(dir: &std::path::Path) -> aos_edge_agent::engine::Engine {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match aos_edge_agent::store::AgentStore::open(dir) {
            Ok(store) => break store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut trusted = aos_core::snapshot::TrustedKeys::new();
    trusted.insert(support::signer().verifying_key());
    let slot = aos_edge_agent::snapshots::SnapshotSlot::new(TENANT.to_owned(), trusted);
    let engine = aos_edge_agent::engine::Engine::open(slot, store, u64::MAX, 8).unwrap();
    if engine.slot().current().is_none() {
        let bytes = signed_snapshot(TENANT, 1, now_ms() + 3_600_000, POLICIES);
        assert!(matches!(
            engine.offer_snapshot(&bytes).await.unwrap(),
            aos_edge_agent::snapshots::Offer::Accepted { version: 1 }
        ));
    }
    engine
}

#[test]
fn a_usage_report_whose_run_write_a_crash_lost_is_counted_once_from_the_outbox() {
    use aos_edge_agent::engine::UsageReport;
    use aos_edge_agent::runs::RunRecord;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let run_id = {
            let engine = engine_in(&store_dir).await;
            let run = engine.start_run(aos_edge_agent::engine::StartRun::default()).await.unwrap();
            let run_id = run["run_id"].as_str().unwrap().to_owned();
            let admitted = admit(&engine, &run_id, 300).await;
            assert!(admitted.allowed);
            // The run as the database holds it before the report (a plain
            // admission is not written).
            let before: Vec<RunRecord> = engine.store().load_runs().unwrap();
            let report = UsageReport { input_tokens: 200, output_tokens: 100, ..Default::default() };
            let answer = engine.report_usage(&run_id, &admitted.step_id, report).await.unwrap();
            assert!(answer.allowed, "acknowledged to the workload");
            // The crash: the report's record was durable in the outbox, the
            // run's write (not flushed yet) is lost.
            let old = before.iter().find(|r| r.run_id == run_id).unwrap();
            assert_eq!(old.usage.tokens, 0);
            engine.store().put_run(&run_id, old).unwrap();
            engine.store().flush().await.unwrap();
            run_id
        };
        for start in ["first", "second"] {
            let engine = engine_in(&store_dir).await;
            let view = engine.run(&run_id).unwrap();
            assert_eq!(view["usage"]["tokens"], 300, "{start} start after the crash: {view}");
            assert_eq!(view["steps"], 1, "{view}");
            assert_eq!(view["open_steps"], json!([]), "{view}");
            let stored: Vec<RunRecord> = engine.store().load_runs().unwrap();
            assert_eq!(stored.iter().find(|r| r.run_id == run_id).unwrap().usage.tokens, 300, "written back");
            drop(engine);
        }
        // And the counters enforce it: 300 used + 800 is over the run's 1,000.
        let engine = engine_in(&store_dir).await;
        let next = admit(&engine, &run_id, 800).await;
        assert!(!next.allowed, "the replayed usage counts against the limit");
        // A plain report is not written to the database until a checkpoint:
        // a clean shutdown makes one.
        let run = engine.start_run(aos_edge_agent::engine::StartRun::default()).await.unwrap();
        let other = run["run_id"].as_str().unwrap().to_owned();
        let admitted = admit(&engine, &other, 100).await;
        let report = UsageReport { input_tokens: 60, output_tokens: 40, ..Default::default() };
        engine.report_usage(&other, &admitted.step_id, report).await.unwrap();
        let stored = |engine: &aos_edge_agent::engine::Engine| {
            let runs: Vec<RunRecord> = engine.store().load_runs().unwrap();
            runs.into_iter().find(|r| r.run_id == other).unwrap().usage.tokens
        };
        assert_eq!(stored(&engine), 0, "the report's run write is deferred");
        // Before the control plane's ack retires the records, the runs
        // counting them are written (the delivery loop's checkpoint).
        deliver_everything(&engine).await;
        assert!(engine.store().pending_raw(usize::MAX).unwrap().is_empty());
        assert_eq!(stored(&engine), 100, "written before its record left the outbox");
        let admitted = admit(&engine, &other, 50).await;
        let report = UsageReport { input_tokens: 30, output_tokens: 20, ..Default::default() };
        engine.report_usage(&other, &admitted.step_id, report).await.unwrap();
        assert_eq!(stored(&engine), 100);
        engine.record_shutdown("test").await.unwrap();
        assert_eq!(stored(&engine), 150, "written at shutdown");
    });
}

/// GAP-069: a governance state is acknowledged to the control plane once
/// its `GOVERNANCE_APPLIED` record (which carries it) is durable in the
/// outbox log; the database's write of it is flushed later. A crash that
/// loses that write must not bring an older state back into force.
#[test]
fn a_governance_state_whose_database_write_a_crash_lost_is_taken_from_the_outbox() {
    use aos_edge_agent::governance::{GovernanceView, Mode};
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let halted = GovernanceView {
        version: 7,
        mode: Mode::Halted,
        reason: "incident 42".to_owned(),
        set_by: "sre-alice".to_owned(),
    };
    runtime.block_on(async {
        {
            let engine = engine_in(&store_dir).await;
            assert!(engine.apply_governance(halted.clone()).await.unwrap());
            assert_eq!(engine.governance(), halted);
            // The crash: the record is durable, the database's write is lost.
            engine.store().save_governance(&GovernanceView::default()).unwrap();
            engine.store().flush().await.unwrap();
        }
        for start in ["first", "second"] {
            let engine = engine_in(&store_dir).await;
            assert_eq!(engine.governance(), halted, "{start} start after the crash");
            assert_eq!(engine.store().load_governance().unwrap(), Some(halted.clone()), "written back");
            let refused = engine.start_run(aos_edge_agent::engine::StartRun::default()).await.unwrap_err();
            assert!(refused.to_string().contains("incident 42"), "{refused}");
        }
        // Once the control plane has the records they leave the log, and
        // the database holds the state on its own.
        {
            let engine = engine_in(&store_dir).await;
            deliver_everything(&engine).await;
            assert!(engine.store().pending_raw(usize::MAX).unwrap().is_empty());
        }
        let engine = engine_in(&store_dir).await;
        assert_eq!(engine.governance(), halted);
        // An older state in the log never wins over a newer one in force.
        let enforcing = GovernanceView { version: 8, mode: Mode::Enforcing, ..halted.clone() };
        assert!(engine.apply_governance(enforcing.clone()).await.unwrap());
        assert!(!engine.apply_governance(halted.clone()).await.unwrap(), "older version ignored");
        drop(engine);
        let engine = engine_in(&store_dir).await;
        assert_eq!(engine.governance(), enforcing);
        assert!(engine.start_run(aos_edge_agent::engine::StartRun::default()).await.is_ok());
        // The database newer than every state still in the log: it stays.
        let degraded = GovernanceView { version: 9, mode: Mode::Degraded, ..halted.clone() };
        engine.store().save_governance(&degraded).unwrap();
        engine.store().flush().await.unwrap();
        drop(engine);
        assert_eq!(engine_in(&store_dir).await.governance(), degraded);
    });
}

/// GAP-069/070 on the EVENT path: a governance state newly in force is
/// published on the event reactor (once, with who set it and why); an
/// older or repeated version changes nothing and publishes nothing.
#[test]
fn a_governance_change_is_published_once_on_the_event_path() {
    use aos_edge_agent::events::AgentEvent;
    use aos_edge_agent::governance::{GovernanceView, Mode};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = engine_in(&dir.path().join("store")).await;
        let mut events = engine.events().subscribe();
        let halted = GovernanceView {
            version: 3,
            mode: Mode::Halted,
            reason: "incident 7".to_owned(),
            set_by: "sre-bob".to_owned(),
        };
        assert!(engine.apply_governance(halted.clone()).await.unwrap());
        assert!(!engine.apply_governance(halted.clone()).await.unwrap(), "same version again");
        let older = GovernanceView { version: 2, mode: Mode::Enforcing, ..halted.clone() };
        assert!(!engine.apply_governance(older).await.unwrap(), "older version");
        let mut changes = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let AgentEvent::GovernanceChanged { version, mode, reason, set_by } = event.as_ref() {
                changes.push((*version, *mode, reason.clone(), set_by.clone()));
            }
        }
        assert_eq!(changes, vec![(3, "HALTED", "incident 7".to_owned(), "sre-bob".to_owned())]);
    });
}

#[test]
fn simulate_decides_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({}));
    let body = json!({"run_id": run, "step": {"phase": "PRE_STEP", "tokens": 1500}});
    let (status, answer) = agent.post("/api/v1/runtime/simulate", body.clone());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"]["outcome"], "STOP", "{answer}");
    assert!(answer["reasons"][0].as_str().unwrap().contains("pol-run-tokens"), "{answer}");
    // Nothing changed: the run is untouched and a real 900-token step fits.
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!((view["steps"].as_u64(), view["status"].as_str()), (Some(0), Some("running")), "{view}");
    let (_, real) = step(&agent, &run, 900);
    assert_eq!(real["allowed"], true, "{real}");
    let (status, body) = agent.post("/api/v1/runtime/simulate", json!({"step": {"tokens": "lots"}}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("step.tokens"), "{body}");
}

#[test]
fn a_full_outbox_refuses_new_runs_rather_than_dropping_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let file = snapshot_file(dir.path(), now_ms() + 3_600_000);
    // A zero budget: the startup and snapshot records already fill it.
    let agent = AgentProc::start_with(dir.path(), Some(file), &["--outbox-budget-mb", "0"]);
    let (status, body) = agent.post("/api/v1/runs", json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("OUTBOX_FULL")), "{body}");
    let (_, health) = agent.get("/health");
    assert_eq!(health["components"]["outbox"]["status"], "full", "{health}");
    assert_eq!(health["status"], "degraded");
}

#[test]
fn a_graceful_stop_is_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_with_policies(dir.path());
    let (_, health) = agent.get("/health");
    let pending = health["components"]["outbox"]["pending_records"].as_u64().unwrap();
    assert!(agent.terminate(), "SIGTERM ends the agent cleanly");
    agent.snapshot_file = None;
    agent.restart();
    let (_, health) = agent.get("/health");
    assert_eq!(
        health["components"]["outbox"]["pending_records"],
        pending + 2,
        "SHUTDOWN then STARTUP wait for delivery: {health}"
    );
}

/// POST with an `Idempotency-Key`: status, body, and whether the answer
/// was a replay.
fn post_keyed(agent: &AgentProc, path: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = client.post(&agent.url(path)).header("Idempotency-Key", key).send_json(body).unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let status = response.status().as_u16();
    (status, response.body_mut().read_json::<Value>().unwrap_or(Value::Null), replayed)
}

#[test]
fn a_retry_with_the_same_idempotency_key_takes_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let start = json!({"agent_id": "research-bot", "session_id": "s-idem"});
    let (status, first, replayed) = post_keyed(&agent, "/api/v1/runs", "start-1", &start);
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, again, replayed) = post_keyed(&agent, "/api/v1/runs", "start-1", &start);
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(first["run_id"], again["run_id"], "one run, not two");
    let run = first["run_id"].as_str().unwrap();

    let steps = format!("/api/v1/runs/{run}/steps");
    let (status, a, _) = post_keyed(&agent, &steps, "step-1", &json!({"estimated_tokens": 400}));
    assert_eq!(status, 200, "{a}");
    let (status, b, replayed) = post_keyed(&agent, &steps, "step-1", &json!({"estimated_tokens": 400}));
    assert_eq!((status, replayed), (200, true), "{b}");
    assert_eq!(a["step_id"], b["step_id"]);
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["open_steps"].as_array().map(Vec::len), Some(1), "reserved once: {view}");

    // The same key for another body is a client bug, refused and harmless.
    let (status, body, _) = post_keyed(&agent, &steps, "step-1", &json!({"estimated_tokens": 900}));
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{body}");
    // A bad key is named.
    let (status, body, _) = post_keyed(&agent, &steps, &"k".repeat(300), &json!({"estimated_tokens": 1}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["open_steps"].as_array().map(Vec::len), Some(1), "{view}");

    // Without a key, each request runs.
    for _ in 0..2 {
        let (status, answer) = step(&agent, run, 10);
        assert_eq!(status, 200, "{answer}");
    }
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["open_steps"].as_array().map(Vec::len), Some(3), "{view}");
}

#[test]
fn a_run_keeps_the_goal_it_was_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_policies(dir.path());
    let run = agent.start_run(json!({"agent_id": "research-bot", "goal": "summarise the Q3 report"}));
    let (_, view) = agent.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(view["goal"], "summarise the Q3 report", "{view}");
    // Too long a goal is refused, naming the field; no run is created.
    let (status, body) = agent.post("/api/v1/runs", json!({"goal": "x".repeat(2_001)}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("goal"), "{body}");
}
