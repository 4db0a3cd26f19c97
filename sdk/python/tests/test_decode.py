"""Unit tests of the answer decoder for what the demo tenant's policies
cannot produce through the step API (a KILL needs a governed data access:
``test_access.py`` has the real one) or through a data access (a PAUSE, a
STOP downgraded by governance). The answers are shaped as the agent
serialises its ``StepAnswer`` and its data-access answers."""

from __future__ import annotations

import json

import httpx
import pytest

from aos_sdk import (
    AccessDenied,
    AccessError,
    AccessPaused,
    AccessStopped,
    AgentError,
    AOSClient,
    AOSGovernanceWarning,
    PolicyKilled,
    PolicyStopped,
    RunEnded,
    RunPaused,
)
from aos_sdk.decode import enforce, explain_refusal
from aos_sdk.results import parse_step_answer

KILL_ANSWER = {
    "step_id": "step-e1-ab",
    "allowed": False,
    "run_status": "failed_policy",
    "decision": {
        "outcome": "KILL",
        "winning_policy": {
            "policy_id": "pol-contractor-no-rag",
            "policy_version": 1,
            "snapshot_version": 3,
            "threshold_hash": "00",
        },
        "requires_ack": False,
        "signals": [
            {
                "policy_id": "pol-contractor-no-rag",
                "policy_version": 1,
                "snapshot_version": 3,
                "kind": "RAG_ACCESS",
                "limit_index": 0,
                "window": None,
                "level": {"level": "BREACH"},
                "value": 1,
                "threshold": 0,
                "blocking": True,
                "overridden": False,
            }
        ],
        "alerts": [],
        "policy_outcomes": [],
        "overrides_applied": [],
        "failures": [],
        "inspection": {},
        "snapshot_version": 3,
        "policies_evaluated": 4,
    },
    "reasons": ["KILL by policy pol-contractor-no-rag v1: RAG_ACCESS breach, value 1 vs limit 0"],
}


def test_a_kill_answer_raises_policy_killed_with_the_decision() -> None:
    decision = parse_step_answer(KILL_ANSWER)
    with pytest.raises(PolicyKilled) as killed:
        enforce(decision, run_id="run-1", phase="pre-step", resume=None)
    err = killed.value
    assert (err.policy_id, err.outcome, err.step_id, err.run_id) == (
        "pol-contractor-no-rag",
        "KILL",
        "step-e1-ab",
        "run-1",
    )
    (signal,) = err.signals
    assert (signal.kind, signal.level, signal.is_breach, signal.value, signal.threshold) == (
        "RAG_ACCESS",
        "BREACH",
        True,
        1,
        0,
    )
    assert err.raw == KILL_ANSWER and "pol-contractor-no-rag" in str(err)

    # The next step's 409 RUN_ENDED is said as the KILL this client saw.
    again = explain_refusal(
        RunEnded("run `run-1` has ended (failed_policy)", status=409, code="RUN_ENDED"),
        run_id="run-1",
        last_block=decision,
        run_view=None,
        resume=None,
    )
    assert isinstance(again, PolicyKilled) and again.policy_id == "pol-contractor-no-rag"


def denied(outcome: str, run_status: str) -> dict[str, object]:
    """A 403 POLICY_DENIED body of a data access."""
    reason = f"{outcome} by policy pol-kb-limit v2: DB_QUERIES per run breach, value 5 vs limit 4"
    return {
        "error": {
            "code": "POLICY_DENIED",
            "message": f"{outcome} by policy: {reason}",
            "evidence_id": "ev-9",
            "run_status": run_status,
            "decision": {"outcome": outcome, "policy_id": "pol-kb-limit", "reasons": [reason], "governance": None},
        }
    }


def scripted(*answers: httpx.Response) -> tuple[AOSClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return AOSClient(base_url="http://agent.test", http_client=http, max_retries=0), seen


QUERY = {"template_id": "by-dept", "params": {"dept": "eng"}}


def test_a_paused_access_is_an_access_denied_and_a_resumable_run_paused() -> None:
    resumed = {"run_id": "run-1", "status": "running"}
    client, seen = scripted(httpx.Response(403, json=denied("PAUSE", "paused")), httpx.Response(200, json=resumed))
    with pytest.raises(AccessDenied) as refused:
        client.access("hr", "query", QUERY, run="run-1")
    paused = refused.value
    assert isinstance(paused, AccessPaused) and isinstance(paused, RunPaused)
    assert (paused.outcome, paused.policy_id, paused.run_status, paused.evidence_id) == (
        "PAUSE",
        "pol-kb-limit",
        "paused",
        "ev-9",
    )
    assert paused.decision is not None and paused.decision.run_status == "paused"
    assert "pol-kb-limit v2" in str(paused) and "ev-9" in str(paused)
    assert paused.resume(ack="alice@example.com") == resumed
    assert (seen[1].url.path, json.loads(seen[1].content)) == (
        "/api/v1/runs/run-1/resume",
        {"acknowledged_by": "alice@example.com"},
    )


def test_a_stopped_access_through_a_run_handle_ends_it() -> None:
    started = {"run_id": "run-1", "status": "running"}
    ended = {"error": {"code": "RUN_ENDED", "message": "run `run-1` has ended (failed_policy)"}}
    view = {**started, "status": "failed_policy", "termination_detail": "STOP by policy pol-kb-limit"}
    client, seen = scripted(
        httpx.Response(201, json=started),
        httpx.Response(403, json=denied("STOP", "failed_policy")),
        httpx.Response(409, json=ended),
        httpx.Response(200, json=view),
    )
    with pytest.raises(AccessStopped) as stopped:
        with client.run(agent_id="a", run_id="run-1") as run:
            try:
                run.access("hr", "query", QUERY)
            except PolicyStopped:
                assert run.ended and run.status == "failed_policy"
                assert run.last_decision is not None and run.last_decision.outcome == "STOP"
                # The next step's 409 is said as the STOP.
                with pytest.raises(PolicyStopped, match="pol-kb-limit"):
                    run.check_step(estimated_tokens=1)
                raise
    assert stopped.value.policy_id == "pol-kb-limit"
    assert [r.url.path for r in seen] == [
        "/api/v1/runs",
        "/api/v1/access",
        "/api/v1/runs/run-1/steps",
        "/api/v1/runs/run-1",
    ], "the ended run is not ended again"


def test_a_stop_governance_downgraded_to_warn_is_a_governance_warning() -> None:
    answer = {
        "evidence_id": "ev-3",
        "plane_id": "hr",
        "source_id": "hr-db",
        "data": [],
        "doc_ids": [],
        "rows": 0,
        "truncated": False,
        "run_status": "running",
        "decision": {
            "outcome": "WARN",
            "policy_id": "pol-kb-limit",
            "reasons": ["STOP by policy pol-kb-limit v2: DB_QUERIES per run breach, value 5 vs limit 4"],
            "governance": {
                "mode": "DEGRADED",
                "enforced": "DOWNGRADED",
                "enforced_outcome": "WARN",
                "would_have_been": "STOP",
            },
        },
    }
    client, _ = scripted(httpx.Response(200, json=answer))
    with pytest.warns(AOSGovernanceWarning, match="DEGRADED DOWNGRADED STOP to WARN") as caught:
        result = client.access("hr", "query", QUERY, run="run-1")
    decision = result.decision
    assert (decision.outcome, decision.decided_outcome, decision.allowed, result.rows) == ("WARN", "STOP", True, 0)
    assert caught[0].filename == __file__ and result.raw == answer


def test_a_run_of_another_key_is_not_an_access_decision() -> None:
    forbidden = {"error": {"code": "FORBIDDEN", "message": "run `run-1` was started with another API key"}}
    client, seen = scripted(httpx.Response(403, json=forbidden))
    with pytest.raises(AgentError) as refused:
        client.access("hr", "query", QUERY, run="run-1")
    assert (refused.value.status, refused.value.code) == (403, "FORBIDDEN")
    assert not isinstance(refused.value, AccessError), "the run's owner check, before any access: no evidence"
    assert len(seen) == 1
