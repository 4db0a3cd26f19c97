"""The async client against the real agent: the same scenarios as the sync
client, with the same results."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
from helpers import AGENT, EXPECTED_TOKEN_BUDGET, Recorder, free_port

from aos_sdk import (
    AgentUnavailable,
    AOSPolicyWarning,
    AsyncAOSClient,
    InvalidRequest,
    PolicyStopped,
    RunPaused,
)


async def async_token_budget_scenario(client: AsyncAOSClient) -> dict[str, Any]:
    """The sync ``token_budget_scenario``, awaited."""
    steps: list[tuple[str, int]] = []
    with pytest.raises(PolicyStopped) as stopped:
        async with client.run(agent_id=AGENT, goal="summarise the quarterly report") as run:
            for _ in range(10):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    step = await run.check_step(estimated_tokens=12_000, model="gpt-test")
                    await run.report_usage(input_tokens=9_000, output_tokens=3_000, response="…")
                policy_warnings = [w for w in caught if issubclass(w.category, AOSPolicyWarning)]
                steps.append((step.outcome, len(policy_warnings)))
    view = await client.get_run(run.id)
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


@pytest.mark.asyncio
async def test_the_async_client_matches_the_sync_one_on_the_token_budget(agent_url: str) -> None:
    recorder = Recorder()

    async def hook(request: httpx.Request) -> None:
        recorder(request)

    http = httpx.AsyncClient(event_hooks={"request": [hook]})
    async with AsyncAOSClient(base_url=agent_url, http_client=http) as client:
        assert await async_token_budget_scenario(client) == EXPECTED_TOKEN_BUDGET
    await http.aclose()
    assert not [p for p in recorder.paths() if p.endswith("/end")]


@pytest.mark.asyncio
async def test_async_pause_resume_exit_status_and_errors(agent_url: str) -> None:
    async with AsyncAOSClient(base_url=agent_url) as client:
        async with client.run(agent_id=AGENT) as run:
            with pytest.raises(RunPaused) as paused:
                await run.check_step(estimated_tokens=100, estimated_cost_usd=11.0)
            assert paused.value.policy_id == "pol-daily-spend"
            resumed = await paused.value.resume(ack="bob@example.com")
            assert resumed["status"] == "running"
            with pytest.raises(InvalidRequest, match="estimated_tokens"):
                await run.check_step(estimated_tokens=-1)
            assert (await run.check_step(estimated_tokens=10)).outcome == "CONTINUE"
            await run.report_usage(input_tokens=5, output_tokens=5)
        assert (await client.get_run(run.id))["status"] == "succeeded"

        with pytest.raises(RuntimeError):
            async with client.run(agent_id=AGENT) as failing:
                raise RuntimeError("model exploded")
        failed = await client.get_run(failing.id)
        assert (failed["status"], failed["termination_detail"]) == ("failed", "RuntimeError: model exploded")

        caps = await client.get_capabilities()
        assert caps["tenant_id"] == "demo"
        sim = await client.simulate(agent_id=AGENT, estimated_tokens=60_000)
        assert (sim.outcome, sim.policy_id) == ("STOP", "pol-run-tokens")


@pytest.mark.asyncio
async def test_async_client_reports_an_agent_that_is_not_running() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncAOSClient(base_url=url, max_retries=1) as client:
        with pytest.raises(AgentUnavailable) as down:
            await client.get_capabilities()
    assert url in str(down.value) and "cargo run -p aos-control-plane -- dev" in str(down.value)
    assert isinstance(down.value.cause, httpx.ConnectError)
