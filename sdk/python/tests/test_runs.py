"""Runs against the real dev-mode agent with the demo tenant's example
policies: the token budget (pol-run-tokens: 50k tokens per run, WARN from
50 %, STOP above), the burn-rate pause (pol-daily-spend: > $40/h over 15 min
pauses, with acknowledgement), how a ``with`` block ends its run, and the
request-level errors."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from helpers import AGENT, EXPECTED_TOKEN_BUDGET, recording_client

from aos_sdk import (
    AOSClient,
    AOSPolicyWarning,
    AOSTimeout,
    InvalidRequest,
    PolicyStopped,
    RunConflict,
    RunEnded,
    RunNotFound,
    RunPaused,
    StepNotFound,
)


def token_budget_scenario(client: AOSClient) -> dict[str, Any]:
    """12k-token steps until pol-run-tokens stops the run; what each step got."""
    steps: list[tuple[str, int]] = []
    with pytest.raises(PolicyStopped) as stopped:
        with client.run(agent_id=AGENT, goal="summarise the quarterly report") as run:
            for _ in range(10):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    step = run.check_step(estimated_tokens=12_000, model="gpt-test")
                    run.report_usage(input_tokens=9_000, output_tokens=3_000, response="…")
                policy_warnings = [w for w in caught if issubclass(w.category, AOSPolicyWarning)]
                steps.append((step.outcome, len(policy_warnings)))
    view = client.get_run(run.id)
    signal = next(s for s in stopped.value.signals if s.is_breach)
    return {
        "steps": steps,
        "policy_id": stopped.value.policy_id,
        "outcome": stopped.value.outcome,
        "breach": (signal.kind, signal.value, signal.threshold, signal.window),
        "reasons_name_policy": all("pol-run-tokens" in r for r in stopped.value.reasons),
        "local_status": run.status,
        "status": view["status"],
        "termination_reason": view["termination_reason"],
        "tokens": view["usage"]["tokens"],
        "admitted_steps": view["steps"],
    }


def test_the_token_limit_stops_the_run_at_the_step_that_crosses_it(agent_url: str) -> None:
    client, recorder = recording_client(agent_url)
    assert token_budget_scenario(client) == EXPECTED_TOKEN_BUDGET
    # The policy ended the run: the block's exit did not try to end it again.
    assert not [p for p in recorder.paths() if p.endswith("/end") or p.endswith("/cancel")]
    assert len([p for p in recorder.paths() if p.endswith("/steps")]) == 5


def test_a_warn_outcome_is_a_python_warning_and_a_log_record(agent_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as run:
        with caplog.at_level(logging.WARNING, logger="aos_sdk"):
            with pytest.warns(AOSPolicyWarning, match="pol-run-tokens") as caught:
                step = run.check_step(estimated_tokens=30_000)
        assert step.allowed and step.outcome == "WARN", step
        assert caught[0].message.decision == step  # type: ignore[union-attr]
        (near,) = step.signals
        assert (near.kind, near.level, near.tier, near.value) == ("TOKENS", "NEAR", 50, 30_000)
        assert any("pol-run-tokens" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a CONTINUE must not warn
            run.report_usage(input_tokens=10, output_tokens=10, step=step)
            quiet = run.check_step(estimated_tokens=10)
        assert quiet.outcome == "CONTINUE" and not quiet.signals
        run.report_usage(input_tokens=5, output_tokens=5)
    assert client.get_run(run.id)["status"] == "succeeded"


def test_leaving_the_block_ends_the_run_with_the_matching_status(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as ok:
        ok.check_step(estimated_tokens=100)
        ok.report_usage(input_tokens=60, output_tokens=40)
    assert client.get_run(ok.id)["status"] == "succeeded"

    with pytest.raises(ValueError, match="boom"):
        with client.run(agent_id=AGENT) as failing:
            raise ValueError("boom")
    failed = client.get_run(failing.id)
    assert (failed["status"], failed["termination_detail"]) == ("failed", "ValueError: boom")

    with pytest.raises(KeyboardInterrupt):
        with client.run(agent_id=AGENT) as interrupted:
            raise KeyboardInterrupt
    cancelled = client.get_run(interrupted.id)
    assert (cancelled["status"], cancelled["termination_reason"]) == ("cancelled", "USER_ABORT")

    # Ended by the caller inside the block: not ended twice.
    with client.run(agent_id=AGENT) as explicit:
        explicit.end("retry", error="upstream rate limit")
    assert client.get_run(explicit.id)["status"] == "retry"
    with pytest.raises(RunEnded):
        client.end_run(explicit.id)


def test_a_pause_is_raised_and_resumed_with_an_acknowledgement(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as run:
        # $11 in one step is a burn rate of $44/h over pol-daily-spend's 15 min window (limit 40).
        with pytest.raises(RunPaused) as paused:
            run.check_step(estimated_tokens=100, estimated_cost_usd=11.0)
        assert (paused.value.policy_id, paused.value.requires_ack) == ("pol-daily-spend", True)
        assert any(s.kind == "BURN_RATE_USD_PER_HOUR" and s.is_breach for s in paused.value.signals)
        assert run.status == "paused" and run.refresh()["status"] == "paused"

        # The agent refuses further steps until resumed (409 RUN_PAUSED),
        # said with the pause decision this client saw.
        with pytest.raises(RunPaused) as again:
            run.check_step(estimated_tokens=100)
        assert (again.value.code, again.value.policy_id) == ("RUN_PAUSED", "pol-daily-spend")

        with pytest.raises(InvalidRequest, match="acknowledged_by"):
            again.value.resume()
        assert again.value.resume(ack="alice@example.com")["status"] == "running"
        with pytest.raises(RunConflict, match="not paused"):
            run.resume(ack="alice@example.com")
        step = run.check_step(estimated_tokens=100, estimated_cost_usd=0.001)
        assert step.outcome == "CONTINUE"
        run.report_usage(input_tokens=50, output_tokens=50, cost_usd=0.001)
    assert client.get_run(run.id)["status"] == "succeeded"


def test_post_goal_and_poll_run(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    started = client.post_goal(agent_id=AGENT, goal="draft the newsletter", session_id="sess-1")
    assert started["id"] == started["run_id"] and started["goal"] == "draft the newsletter"
    assert client.get_run(started["id"])["goal"] == "draft the newsletter", "stored by the agent"
    assert started["status"] == "running" and started["scope"]["session_id"] == "sess-1"
    assert client.poll_run(started["id"], until_terminal=False)["status"] == "running"
    with pytest.raises(AOSTimeout) as waited:
        client.poll_run(started["id"], timeout=0.3, interval=0.05)
    assert waited.value.run is not None and waited.value.run["status"] == "running"
    client.cancel_run(started["id"], reason="the user closed the tab")
    done = client.poll_run(started["id"], timeout=5)
    assert (done["status"], done["termination_detail"]) == ("cancelled", "the user closed the tab")


def test_capabilities_health_and_side_effect_free_simulation(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    caps = client.get_capabilities()
    assert caps["tenant_id"] == "demo" and caps["default_failure_mode"] == "fail_closed"
    assert "STOP" in caps["outcomes"] and caps["snapshot_version"] >= 1
    health = client.health()
    assert health["components"]["boot_guard"]["validated"] is True

    sim = client.simulate(goal="a huge report", agent_id=AGENT, estimated_tokens=60_000)
    assert (sim.outcome, sim.policy_id, sim.allowed) == ("STOP", "pol-run-tokens", False)
    assert sim.step_id is None and any(s.is_breach and s.value == 60_000 for s in sim.signals)

    with client.run(agent_id=AGENT) as run:
        run.check_step(estimated_tokens=20_000)
        run.report_usage(input_tokens=15_000, output_tokens=5_000)
        # Against the run's counters (20k used): 35k more would breach…
        assert client.simulate(agent_id=AGENT, run_id=run.id, estimated_tokens=35_000).outcome == "STOP"
        # …but simulating changed nothing: the run still has 30k left.
        with pytest.warns(AOSPolicyWarning):
            assert run.check_step(estimated_tokens=29_000).allowed
        run.report_usage(input_tokens=1, output_tokens=1)
    assert client.get_run(run.id)["usage"]["tokens"] == 20_002


def test_bad_input_unknown_run_and_unknown_step_are_typed_errors(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as run:
        with pytest.raises(InvalidRequest) as bad:
            run.check_step(estimated_tokens=-5)
        assert (bad.value.status, bad.value.code) == (400, "INVALID_INPUT")
        assert "estimated_tokens" in str(bad.value)
        with pytest.raises(InvalidRequest, match="cost_usd"):
            run.check_step(estimated_tokens=1, estimated_cost_usd=-1.0)
        with pytest.raises(StepNotFound):
            run.report_usage(input_tokens=1, step="step-e1-00000000000000000000000000000000")
        with pytest.raises(ValueError, match="check_step"):
            run.report_usage(input_tokens=1)  # no open step
    with pytest.raises(RunNotFound) as missing:
        client.get_run("run-that-does-not-exist")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")
    with pytest.raises(InvalidRequest, match="run_id"):
        client.post_goal(agent_id=AGENT, run_id="x" * 200)
