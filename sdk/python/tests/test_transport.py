"""Connection handling. Against nothing: an agent that is not running gives
:class:`AgentUnavailable` naming the URL and how to start it. Unit tests of
the SDK's retry logic (httpx ``MockTransport`` standing in for the network,
not for AOS): which failures are retried, that every retry of a POST
carries the first attempt's ``Idempotency-Key``, and that a data access is
retried only where it cannot run twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from helpers import free_port

from aos_sdk import (
    AccessFailed,
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


ACCESSED = {
    "evidence_id": "ev-1",
    "plane_id": "kp-public-docs",
    "source_id": "kb-docs",
    "data": [{"id": "doc-3", "title": "Password reset"}],
    "doc_ids": ["doc-3"],
    "rows": 1,
    "truncated": False,
    "run_status": "running",
    "decision": {"outcome": "CONTINUE", "policy_id": None, "reasons": [], "governance": None},
}
QUERY = {"template_id": "docs-by-topic", "params": {"topic": "account"}}


def accessed(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ACCESSED)


def access_failed(code: int, error: str) -> Callable[..., httpx.Response]:
    body = {
        "error": {
            "code": error,
            "message": f"{error} for the test",
            "evidence_id": "ev-failed",
            "run_status": "running",
            "decision": {"outcome": "CONTINUE", "policy_id": None, "reasons": [], "governance": None},
        }
    }
    return lambda request: httpx.Response(code, json=body)


@pytest.mark.parametrize(("code", "error"), [(502, "UPSTREAM_STATUS"), (502, "REDIRECT_REFUSED"), (504, "TIMEOUT")])
def test_a_failed_access_is_never_retried(code: int, error: str) -> None:
    client, seen = scripted([access_failed(code, error), accessed, accessed])
    with pytest.raises(AccessFailed) as failed:
        client.access("kp-public-docs", "query", QUERY, run="run-1")
    assert (failed.value.status, failed.value.code, failed.value.evidence_id) == (code, error, "ev-failed")
    assert (failed.value.run_id, failed.value.plane, failed.value.action) == ("run-1", "kp-public-docs", "query")
    assert len(seen) == 1, "the access may have had effects: not repeated"


def test_an_access_is_retried_only_where_it_cannot_run_twice() -> None:
    # 503: refused before anything ran. No answer: the retry carries the
    # key, so the agent replays a finished first attempt, or says it is
    # still running (409 REQUEST_IN_PROGRESS: asked again after Retry-After).
    client, seen = scripted(
        [
            status(503, "BOOT_GUARD", retry_after="0"),
            refused_connection,
            status(409, "REQUEST_IN_PROGRESS", retry_after="0"),
            accessed,
        ],
        retry=RetryPolicy(max_retries=3, backoff_base=0.001),
    )
    result = client.access("kp-public-docs", "query", QUERY, run="run-1")
    assert (result.doc_ids, result.rows, result.evidence_id) == (["doc-3"], 1, "ev-1")
    assert len(seen) == 4 and len({r.headers["Idempotency-Key"] for r in seen}) == 1
    assert [r.content for r in seen] == [seen[0].content] * 4

    # A caller's own key is the one sent (to repeat an access later).
    client, seen = scripted([accessed])
    client.access("kp-public-docs", "query", QUERY, run="run-1", idempotency_key="my-key-1")
    assert seen[0].headers["Idempotency-Key"] == "my-key-1"


@pytest.mark.asyncio
async def test_the_async_client_does_not_retry_a_failed_access_either() -> None:
    seen: list[httpx.Request] = []
    answers = [status(503, "BOOT_GUARD", retry_after="0"), access_failed(504, "TIMEOUT"), accessed]

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1](request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = AsyncAOSClient(base_url="http://agent.test", retry=FAST, http_client=http)
    with pytest.raises(AccessFailed) as failed:
        await client.access("kp-public-docs", "query", QUERY, run="run-1")
    assert (failed.value.code, len(seen)) == ("TIMEOUT", 2)
    await http.aclose()
