"""Unit tests of the answer decoder for what the demo tenant's policies
cannot produce through the step API (a KILL needs a governed data access,
which the agent does not expose yet). The answer is shaped as the agent
serialises its ``StepAnswer``."""

from __future__ import annotations

import pytest

from aos_sdk import PolicyKilled, RunEnded
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
