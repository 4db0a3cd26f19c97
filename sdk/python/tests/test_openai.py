"""The OpenAI wrapper with the official ``openai`` client, a real local
server speaking the chat-completions format, and the real agent: the
completion is checked first (with the estimate), then its ``usage`` is
reported, and the agent's run (and the control plane's records) show it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import openai
import pytest
from helpers import AGENT, AOSSystem, recording_client, wait_until
from openai_server import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, OpenAIServer, openai_server

from aos_sdk import AOSClient, AOSPolicyWarning, AsyncAOSClient, PolicyStopped
from aos_sdk.openai import messages_text, wrap_openai
from aos_sdk.protocol import sha256_hex

MESSAGES = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
]


@pytest.fixture()
def llm() -> Iterator[OpenAIServer]:
    with openai_server() as server:
        yield server


def test_a_completion_is_checked_then_metered_from_its_usage(
    aos_system: AOSSystem, agent_url: str, llm: OpenAIServer
) -> None:
    aos, recorder = recording_client(agent_url)
    with aos.run(agent_id=AGENT, goal="answer a geography question") as run:
        client = wrap_openai(openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0), run=run)
        reply = client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=100)
        assert reply.choices[0].message.content == REPLY
        assert client.last_decision is not None and client.last_decision.outcome == "CONTINUE"
        view = run.refresh()
        # Unwrapped attributes pass through to the OpenAI client.
        assert client.base_url == openai.OpenAI(base_url=llm.base_url, api_key="test").base_url

    assert len(llm.requests) == 1 and llm.requests[0]["body"]["max_tokens"] == 100
    assert view["usage"]["tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS
    assert (view["steps"], view["open_steps"]) == (1, [])
    check = next(json.loads(body) for _, path, body in recorder.bodies if path.endswith("/steps"))
    text = messages_text(MESSAGES)
    assert check["estimated_tokens"] == math.ceil(len(text) / 4) + 100
    assert (check["model"], check["prompt"]) == ("gpt-test", text)

    # The agent's LLM run record reaches the control plane with the usage
    # and the response's hash.
    (record,) = wait_until(
        "the LLM run record at the control plane", lambda: aos_system.records(run.id, "LLM_RUN_RECORD") or None
    )
    flat = {**record, **(record.get("body") or {})}
    assert (flat["input_tokens"], flat["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS), record
    assert flat["response_hash"] == sha256_hex(REPLY), record
    assert aos.get_run(run.id)["status"] == "succeeded"


def test_a_refused_check_never_calls_the_model(agent_url: str, llm: OpenAIServer) -> None:
    aos = AOSClient(base_url=agent_url)
    with pytest.raises(PolicyStopped) as stopped:
        with aos.run(agent_id=AGENT) as run:
            with pytest.warns(AOSPolicyWarning):
                run.check_step(estimated_tokens=45_000)
                run.report_usage(input_tokens=40_000, output_tokens=5_000)
            client = wrap_openai(openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0), run=run)
            client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=10_000)
    assert stopped.value.policy_id == "pol-run-tokens"
    assert llm.requests == [], "the model was not called"
    assert aos.get_run(run.id)["usage"]["tokens"] == 45_000


def test_a_failed_model_call_releases_its_reservation(agent_url: str, llm: OpenAIServer) -> None:
    aos = AOSClient(base_url=agent_url)
    with pytest.raises(openai.InternalServerError):
        with aos.run(agent_id=AGENT) as run:
            client = wrap_openai(openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0), run=run)
            client.chat.completions.create(model="fail-model", messages=MESSAGES)
    view = aos.get_run(run.id)
    assert (view["status"], view["steps"], view["open_steps"], view["usage"]["tokens"]) == ("failed", 1, [], 0)
    assert "InternalServerError" in view["termination_detail"]


def test_a_run_per_call_and_hashes_only(agent_url: str, llm: OpenAIServer) -> None:
    aos, recorder = recording_client(agent_url)
    client = wrap_openai(
        openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0),
        aos=aos,
        agent_id=AGENT,
        send_text=False,
        cost=lambda model, tokens_in, tokens_out: (tokens_in + tokens_out) / 1_000_000,
    )
    for _ in range(2):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    starts = [json.loads(b) for m, p, b in recorder.bodies if p == "/api/v1/runs"]
    assert len(starts) == 2 and starts[0]["run_id"] != starts[1]["run_id"]
    for start in starts:
        view = aos.get_run(start["run_id"])
        assert (view["status"], view["usage"]["tokens"]) == ("succeeded", PROMPT_TOKENS + COMPLETION_TOKENS)
        assert view["usage"]["cost_micros"] == PROMPT_TOKENS + COMPLETION_TOKENS
    reports = [json.loads(b) for m, p, b in recorder.bodies if p.endswith("/usage")]
    assert all("prompt" not in r and "response" not in r for r in reports), reports
    assert all(r["response_hash"] == sha256_hex(REPLY) for r in reports)
    checks = [json.loads(b) for m, p, b in recorder.bodies if p.endswith("/steps")]
    estimate = math.ceil(len(messages_text(MESSAGES)) / 4) + 1024  # no max_tokens: the default
    assert len(checks) == 2 and all("prompt" not in c and c["estimated_tokens"] == estimate for c in checks), checks


@pytest.mark.asyncio
async def test_the_async_wrapper_meters_an_async_openai_client(agent_url: str, llm: OpenAIServer) -> None:
    async with AsyncAOSClient(base_url=agent_url) as aos:
        async with aos.run(agent_id=AGENT) as run:
            client = wrap_openai(openai.AsyncOpenAI(base_url=llm.base_url, api_key="test", max_retries=0), run=run)
            reply = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_completion_tokens=50)
            assert reply.usage is not None and reply.usage.completion_tokens == COMPLETION_TOKENS
        view = await aos.get_run(run.id)
    assert (view["status"], view["usage"]["tokens"], view["steps"]) == (
        "succeeded",
        PROMPT_TOKENS + COMPLETION_TOKENS,
        1,
    )
    assert llm.requests[0]["body"]["max_completion_tokens"] == 50


def test_streaming_is_refused_rather_than_left_unmetered(agent_url: str, llm: OpenAIServer) -> None:
    with AOSClient(base_url=agent_url).run(agent_id=AGENT) as run:
        client = wrap_openai(openai.OpenAI(base_url=llm.base_url, api_key="test"), run=run)
        with pytest.raises(NotImplementedError, match="stream"):
            client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    assert llm.requests == []
