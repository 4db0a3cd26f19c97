"""Connection handling. Against nothing: an agent that is not running gives
:class:`AgentUnavailable` naming the URL and how to start it. Unit tests of
the SDK's retry logic (httpx ``MockTransport`` standing in for the network,
not for AOS): which failures are retried, and that every retry of a POST
carries the first attempt's ``Idempotency-Key``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from helpers import free_port

from aos_sdk import (
    AgentError,
    AgentUnavailable,
    AOSClient,
    AsyncAOSClient,
    GovernanceHalted,
    RetryPolicy,
    ServiceUnavailable,
)

FAST = RetryPolicy(max_retries=2, backoff_base=0.001, backoff_max=0.01)
RUN = {"run_id": "run-1", "status": "running", "updated_at_ms": 1}


def test_an_agent_that_is_not_running_is_reported_with_how_to_start_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = AOSClient(base_url=url, retry=FAST)
    started = time.monotonic()
    with pytest.raises(AgentUnavailable) as down:
        client.post_goal(agent_id="research-bot")
    assert time.monotonic() - started < 5
    message = str(down.value)
    assert url in message and "cargo run -p aos-control-plane -- dev" in message, message
    assert "after 3 attempts" in message, message
    assert down.value.url == url and isinstance(down.value.cause, httpx.ConnectError)


def scripted(
    answers: list[Callable[[httpx.Request], httpx.Response]], retry: RetryPolicy = FAST
) -> tuple[AOSClient, list[httpx.Request]]:
    """A client whose requests get ``answers`` in turn."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1](request)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return AOSClient(base_url="http://agent.test", retry=retry, http_client=http, api_key="k-123"), seen


def status(code: int, error: str | None = None, retry_after: str | None = None) -> Callable[..., httpx.Response]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": error, "message": f"{error} for the test"}} if error else None
    return lambda request: httpx.Response(code, json=body, headers=headers)


def refused_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def created(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json=RUN)


def test_a_post_is_retried_with_the_same_idempotency_key() -> None:
    client, seen = scripted(
        [status(503, "BOOT_GUARD", retry_after="0"), refused_connection, status(502), created, created],
        retry=RetryPolicy(max_retries=3, backoff_base=0.001),
    )
    assert client.post_goal(agent_id="a")["id"] == "run-1"
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert len(keys) == 4 and len(set(keys[:4])) == 1, keys
    uuid.UUID(keys[0])  # a uuid4
    assert [r.content for r in seen[:4]] == [seen[0].content] * 4, "the same body, including the run id"

    client.post_goal(agent_id="a")  # another logical call: another key
    assert seen[4].headers["Idempotency-Key"] != keys[0]
    assert all(r.headers["Authorization"] == "Bearer k-123" for r in seen)


def test_retries_stop_after_max_retries_and_say_why() -> None:
    client, seen = scripted([status(503, "OUTBOX_FULL", retry_after="0")] * 3)
    with pytest.raises(ServiceUnavailable) as full:
        client.post_goal(agent_id="a")
    assert (full.value.status, full.value.code, len(seen)) == (503, "OUTBOX_FULL", 3)

    client, seen = scripted([status(504)] * 3)
    with pytest.raises(AgentError) as gateway:
        client.get_capabilities()
    assert (gateway.value.status, len(seen)) == (504, 3)
    assert "Idempotency-Key" not in seen[0].headers, "only POSTs carry a key"


def test_governance_refusals_and_client_errors_are_not_retried() -> None:
    client, seen = scripted([status(503, "GOVERNANCE_HALTED", retry_after="1")])
    with pytest.raises(GovernanceHalted):
        client.post_goal(agent_id="a")
    assert len(seen) == 1

    client, seen = scripted([status(500, "STORE_FAILURE")])
    with pytest.raises(AgentError) as store:
        client.get_run("run-1")
    assert (store.value.code, len(seen)) == ("STORE_FAILURE", 1)


def test_no_retries_when_max_retries_is_zero() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("refused", request=request)

    client = AOSClient(
        base_url="http://agent.test", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(AgentUnavailable):
        client.health()
    assert len(seen) == 1
    assert "Authorization" not in seen[0].headers, "no api_key, no Authorization header"


@pytest.mark.asyncio
async def test_the_async_client_reuses_the_key_across_retries_too() -> None:
    seen: list[httpx.Request] = []
    answers = [status(503, "BOOT_GUARD", retry_after="0"), refused_connection, created]

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1](request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = AsyncAOSClient(base_url="http://agent.test", retry=FAST, http_client=http)
    assert (await client.post_goal(agent_id="a"))["id"] == "run-1"
    assert len({r.headers["Idempotency-Key"] for r in seen}) == 1 and len(seen) == 3
    await http.aclose()
