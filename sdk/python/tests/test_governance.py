"""The tenant's governance lever, pulled through the control plane's REST
API, as the SDK reports it: HALTED and DEGRADED refuse new runs (and are
not retried although the agent answers 503), HALTED ends running runs,
DEGRADED downgrades an in-flight STOP to a warning. Each test restores
ENFORCING and waits for the agent to apply it."""

from __future__ import annotations

import pytest
from helpers import AGENT, AOSSystem, recording_client

from aos_sdk import AOSClient, AOSGovernanceWarning, GovernanceDegraded, GovernanceHalted


def test_a_halted_tenant_refuses_new_runs_and_ends_running_ones(aos_system: AOSSystem, agent_url: str) -> None:
    client, recorder = recording_client(agent_url)
    with client.run(agent_id=AGENT) as in_flight:
        in_flight.check_step(estimated_tokens=100)
        in_flight.report_usage(input_tokens=50, output_tokens=50)
        try:
            aos_system.set_governance("halt", "runaway agent in the SDK tests")
            with pytest.raises(GovernanceHalted) as refused:
                with client.run(agent_id=AGENT):
                    pytest.fail("a run started while the tenant is halted")
            assert (refused.value.status, refused.value.code) == (503, "GOVERNANCE_HALTED")
            assert "runaway agent in the SDK tests" in str(refused.value)
            assert recorder.paths().count("/api/v1/runs") == 2, "a governance refusal is not retried"

            # The running run was killed by the halt: its next step says so.
            with pytest.raises(GovernanceHalted, match="runaway agent in the SDK tests"):
                in_flight.check_step(estimated_tokens=100)
            assert in_flight.ended
        finally:
            aos_system.set_governance("enable", "SDK test done")
    view = client.get_run(in_flight.id)
    assert view["status"] == "failed_policy", view
    assert not [p for p in recorder.paths() if p.endswith("/end")], "the halted run is not ended twice"
    with client.run(agent_id=AGENT) as after:
        assert after.check_step(estimated_tokens=100).outcome == "CONTINUE"
        after.report_usage(input_tokens=1, output_tokens=1)


def test_a_degraded_tenant_refuses_new_runs_and_downgrades_steps(aos_system: AOSSystem, agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as in_flight:
        try:
            aos_system.set_governance("degrade", "database failover drill")
            with pytest.raises(GovernanceDegraded) as refused:
                client.post_goal(agent_id=AGENT, goal="anything")
            assert (refused.value.status, refused.value.code) == (503, "GOVERNANCE_DEGRADED")
            assert "database failover drill" in str(refused.value)

            # A step the token budget would STOP is let through as a WARN, flagged.
            with pytest.warns(AOSGovernanceWarning, match="DOWNGRADED STOP to WARN") as caught:
                step = in_flight.check_step(estimated_tokens=60_000)
            assert (step.allowed, step.outcome, step.decided_outcome) == (True, "WARN", "STOP")
            assert step.governance is not None and step.governance["would_have_been"] == "STOP"
            assert caught[0].message.decision.policy_id == "pol-run-tokens"  # type: ignore[union-attr]
            in_flight.report_usage(input_tokens=10, output_tokens=10)
        finally:
            aos_system.set_governance("enable", "SDK test done")
    assert client.get_run(in_flight.id)["status"] == "succeeded"


def test_a_disabled_tenant_bypasses_a_stop_with_a_governance_warning(aos_system: AOSSystem, agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    try:
        aos_system.set_governance("disable", "policy bug under investigation")
        with client.run(agent_id=AGENT) as run:
            with pytest.warns(AOSGovernanceWarning, match="BYPASSED STOP to CONTINUE"):
                step = run.check_step(estimated_tokens=60_000)
            assert (step.allowed, step.outcome, step.decided_outcome) == (True, "CONTINUE", "STOP")
            assert step.governance is not None and step.governance["enforced"] == "BYPASSED"
            run.report_usage(input_tokens=1, output_tokens=1)
    finally:
        aos_system.set_governance("enable", "SDK test done")
    assert client.get_run(run.id)["status"] == "succeeded"
