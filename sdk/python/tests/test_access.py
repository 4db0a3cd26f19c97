"""Governed data access (``POST /api/v1/access``) against the real dev-mode
agent: the demo knowledge plane ``kp-public-docs`` (a SQLite source with the
template ``docs-by-topic``), and an HTTP plane this module adds to the demo
tenant through the control plane (a local upstream behind it). What the
demo policies decide for it: ``pol-run-tokens`` warns near its token budget,
``pol-analyst-rag`` stops the ``analyst`` agent past 100 SQL queries an hour,
``pol-contractor-no-rag`` kills a contractor key's retrieval."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import AGENT, AOSSystem, Recorder, recording_client, wait_until
from upstream_server import Upstream, upstream_server

from aos_sdk import (
    AccessDenied,
    AccessError,
    AccessFailed,
    AccessKilled,
    AccessResult,
    AccessStopped,
    AOSClient,
    AOSPolicyWarning,
    AsyncAOSClient,
    InvalidParams,
    InvalidRequest,
    PolicyError,
    PolicyKilled,
    PolicyStopped,
    RunEnded,
    RunNotFound,
)

PLANE = "kp-public-docs"
WEB_PLANE = "kp-sdk-web"


def by_topic(topic: Any) -> dict[str, Any]:
    """The payload of a ``docs-by-topic`` query."""
    return {"template_id": "docs-by-topic", "params": {"topic": topic}}


BILLING_DOCS = [
    {"id": "doc-1", "title": "Refund policy", "body": "Refunds are issued within 14 days of purchase."},
    {"id": "doc-2", "title": "Invoices", "body": "Invoices are emailed on the first business day of the month."},
]


@pytest.fixture(scope="module")
def web_plane(aos_system: AOSSystem) -> Iterator[Upstream]:
    """An enabled HTTP source (endpoints ``item`` and ``moved``) behind the
    active PUBLIC plane ``kp-sdk-web`` of the demo tenant, once the agent
    has the snapshot with it."""
    with upstream_server() as upstream:
        source = {
            "source_id": "sdk-web",
            "asset_type": "HTTP",
            "http": {
                "base_url": upstream.base_url,
                "max_response_bytes": 65536,
                "endpoints": [
                    {
                        "endpoint_id": "item",
                        "method": "GET",
                        "path_template": "/items/{id}",
                        "params": [{"name": "id", "type": "STRING"}],
                    },
                    {"endpoint_id": "moved", "method": "GET", "path_template": "/redirect"},
                ],
            },
        }
        steps: list[tuple[str, dict[str, Any] | None]] = [
            ("/api/v1/tenants/demo/sources", source),
            ("/api/v1/tenants/demo/sources/sdk-web/verify", None),
            ("/api/v1/tenants/demo/sources/sdk-web/enable", {"reason": "SDK tests"}),
            (
                "/api/v1/tenants/demo/planes",
                {
                    "plane_id": WEB_PLANE,
                    "name": "SDK test web",
                    "sensitivity": "PUBLIC",
                    "bound_source_ids": ["sdk-web"],
                },
            ),
            (f"/api/v1/tenants/demo/planes/{WEB_PLANE}/activate", {"reason": "SDK tests", "confirm": True}),
        ]
        version = 0
        for path, body in steps:
            answer = aos_system.cp("POST", path, body)
            assert answer.status_code == 200, f"{path}: {answer.text}"
            version = int(answer.json()["tenant_snapshot_version"])
        wait_until(
            f"the agent's snapshot v{version} (plane {WEB_PLANE})",
            lambda: (
                httpx.get(aos_system.agent_url + "/api/v1/capabilities", timeout=5).json()["snapshot_version"]
                >= version
            ),
        )
        yield upstream


def evidence(aos_system: AOSSystem, run_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The run's evidence records at the control plane (once ``count`` have
    arrived), by evidence id."""
    records = wait_until(
        f"{count} evidence record(s) of {run_id} at the control plane",
        lambda: r if len(r := aos_system.records(run_id, "RETRIEVAL_EVIDENCE")) >= count else None,
    )
    return {r["body"]["evidence_id"]: r["body"] for r in records}


def result_view(result: AccessResult) -> dict[str, Any]:
    """What a result says, without its per-attempt evidence id."""
    return {
        "plane_id": result.plane_id,
        "source_id": result.source_id,
        "data": result.data,
        "doc_ids": result.doc_ids,
        "rows": result.rows,
        "truncated": result.truncated,
        "run_status": result.run_status,
        "outcome": result.outcome,
        "policy_id": result.decision.policy_id,
        "evidence": result.evidence_id.startswith("ev-"),
    }


def error_view(error: AccessError) -> dict[str, Any]:
    """What an access error says, without its per-attempt evidence id."""
    return {
        "type": type(error).__name__,
        "status": error.status,
        "code": error.code,
        "run_status": error.run_status,
        "decision": error.decision,
        "plane": error.plane,
        "action": error.action,
        "evidence": (error.evidence_id or "").startswith("ev-"),
    }


#: What the billing query and an unknown plane give, with either client.
EXPECTED_BILLING = {
    "plane_id": PLANE,
    "source_id": "kb-docs",
    "data": BILLING_DOCS,
    "doc_ids": ["doc-1", "doc-2"],
    "rows": 2,
    "truncated": False,
    "run_status": "running",
    "outcome": "CONTINUE",
    "policy_id": None,
    "evidence": True,
}
EXPECTED_UNKNOWN_PLANE = {
    "type": "AccessDenied",
    "status": 403,
    "code": "UNKNOWN_PLANE",
    "run_status": "running",
    "decision": None,
    "plane": "kp-nowhere",
    "action": "query",
    "evidence": True,
}


def test_a_query_returns_the_rows_with_their_evidence(aos_system: AOSSystem, agent_url: str) -> None:
    client, recorder = recording_client(agent_url)
    with client.run(agent_id=AGENT, goal="answer a billing question") as run:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a CONTINUE does not warn
            docs = client.access(plane=PLANE, action="query", payload=by_topic("billing"), run=run)
        assert result_view(docs) == EXPECTED_BILLING
        assert docs.doc_ids == ["doc-1", "doc-2"]
        assert run.last_decision == docs.decision and run.status == "running"
        # By run id too: the same rows, another attempt with its own evidence.
        again = client.access(plane=PLANE, action="query", payload=by_topic("billing"), run=run.id)
        assert result_view(again) == EXPECTED_BILLING and again.evidence_id != docs.evidence_id
        assert run.refresh()["usage"]["db_queries"] == 2

    sent = [json.loads(body) for _, path, body in recorder.bodies if path == "/api/v1/access"]
    assert sent[0] == {"run_id": run.id, "plane": PLANE, "action": "query", "payload": by_topic("billing")}
    assert client.get_run(run.id)["status"] == "succeeded"
    # The evidence at the control plane: ids and hashes, never the rows.
    records = evidence(aos_system, run.id, 2)
    record = records[docs.evidence_id]
    assert (record["outcome"], record["target"], record["doc_ids"], record["rows"]) == (
        "ALLOWED",
        "docs-by-topic",
        ["doc-1", "doc-2"],
        2,
    )
    assert "Refunds are issued" not in json.dumps(record)


def test_sql_injection_in_a_parameter_is_just_a_value(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as run:
        injected = run.access(PLANE, "query", by_topic("billing' OR '1'='1"))
        assert (injected.data, injected.doc_ids, injected.rows) == ([], [], 0)
        dropped = run.access(PLANE, "query", by_topic("x'; DROP TABLE docs; --"))
        assert dropped.rows == 0
        # The table is intact.
        assert run.access(PLANE, "query", by_topic("billing")).doc_ids == ["doc-1", "doc-2"]


def test_refusals_and_bad_input_are_typed_errors(aos_system: AOSSystem, agent_url: str) -> None:
    client, recorder = recording_client(agent_url)
    with client.run(agent_id=AGENT) as run:
        with pytest.raises(AccessDenied) as unknown:
            run.access("kp-nowhere", "query", by_topic("billing"))
        assert error_view(unknown.value) == EXPECTED_UNKNOWN_PLANE
        assert not isinstance(unknown.value, PolicyError), "the plane gate is not a policy outcome"
        assert (unknown.value.policy_id, unknown.value.reasons, unknown.value.run_id) == (None, (), run.id)
        assert "kp-nowhere" in str(unknown.value) and str(unknown.value.evidence_id) in str(unknown.value)

        with pytest.raises(AccessDenied) as no_template:
            run.access(PLANE, "query", {"template_id": "all-docs"})
        assert no_template.value.code == "UNKNOWN_TARGET"

        # A parameter of the wrong type: refused before anything ran, evidenced.
        with pytest.raises(InvalidRequest) as bad:
            run.access(PLANE, "query", by_topic(42))
        assert isinstance(bad.value, InvalidParams) and isinstance(bad.value, AccessError)
        assert (bad.value.status, bad.value.code) == (400, "INVALID_PARAMS")
        assert "topic" in str(bad.value) and (bad.value.evidence_id or "").startswith("ev-")
        with pytest.raises(InvalidParams, match="topic"):
            run.access(PLANE, "query", {"template_id": "docs-by-topic"})

        # No raw SQL can be expressed: the request itself is refused.
        with pytest.raises(InvalidRequest) as raw:
            run.access(PLANE, "query", {"template_id": "docs-by-topic", "sql": "SELECT * FROM docs"})
        assert (raw.value.status, raw.value.code) == (400, "INVALID_INPUT")
        assert "`sql`" in str(raw.value) and not isinstance(raw.value, AccessError)
        with pytest.raises(InvalidRequest, match="unknown action `delete`"):
            run.access(PLANE, "delete", {})
        with pytest.raises(ValueError, match="plane"):
            run.access("", "query", by_topic("billing"))

        # None of it ended the run.
        assert run.access(PLANE, "query", by_topic("account")).doc_ids == ["doc-3"]
    assert client.get_run(run.id)["status"] == "succeeded"
    accesses = recorder.paths().count("/api/v1/access")
    assert accesses == 7, "the client refused the empty plane without sending it"

    with pytest.raises(RunNotFound):
        client.access(PLANE, "query", by_topic("billing"), run="run-that-does-not-exist")
    with pytest.raises(RunEnded):
        client.access(PLANE, "query", by_topic("billing"), run=run.id)

    # Evidence of every attempt on the run: 2 refused by the gate, 2 bad
    # parameters, 1 allowed, and the attempt on the ended run (the raw-SQL
    # and unknown-action requests the agent could not read, and the unknown
    # run, leave none).
    records = evidence(aos_system, run.id, 6)
    outcomes = sorted(r["outcome"] for r in records.values())
    assert outcomes == ["ALLOWED", "DENIED", "DENIED", "DENIED", "DENIED", "DENIED"], outcomes
    assert sum(r.get("code") == "RUN_ENDED" for r in records.values()) == 1, records


def test_a_warn_decision_is_a_python_warning(agent_url: str) -> None:
    client = AOSClient(base_url=agent_url)
    with client.run(agent_id=AGENT) as run:
        with pytest.warns(AOSPolicyWarning):
            run.check_step(estimated_tokens=30_000)
            run.report_usage(input_tokens=20_000, output_tokens=10_000)
        # 30k of pol-run-tokens' 50k: every decision of the run warns now.
        with pytest.warns(AOSPolicyWarning, match=r"data access\): WARN by policy pol-run-tokens") as caught:
            docs = run.access(PLANE, "query", by_topic("privacy"))
        assert (docs.outcome, docs.decision.policy_id, docs.doc_ids) == ("WARN", "pol-run-tokens", ["doc-4"])
        assert docs.decision.allowed and docs.decision.reasons[0].startswith("WARN by policy pol-run-tokens")
        (warning,) = caught
        assert warning.message.decision == docs.decision  # type: ignore[union-attr]
        assert warning.filename == __file__, "the warning points at the caller's line"
        with pytest.warns(AOSPolicyWarning) as by_client:
            client.access(PLANE, "query", by_topic("privacy"), run=run)
        assert by_client[0].filename == __file__
        with pytest.warns(AOSPolicyWarning) as by_id:
            client.access(PLANE, "query", by_topic("privacy"), run=run.id)
        assert by_id[0].filename == __file__
    assert client.get_run(run.id)["status"] == "succeeded"


def test_the_same_idempotency_key_gets_the_first_answer(agent_url: str) -> None:
    client, recorder = recording_client(agent_url)
    with client.run(agent_id=AGENT) as run:
        first = run.access(PLANE, "query", by_topic("billing"), idempotency_key="sdk-access-replay-1")
        again = client.access(PLANE, "query", by_topic("billing"), run=run.id, idempotency_key="sdk-access-replay-1")
        assert again == first and again.evidence_id == first.evidence_id
        # Answered from the agent's replay cache: the query ran once.
        assert run.refresh()["usage"]["db_queries"] == 1
        other = run.access(PLANE, "query", by_topic("billing"))
        assert other.evidence_id != first.evidence_id
    keys = [h.get("idempotency-key") for _, path, h, _ in recorder.sent if path == "/api/v1/access"]
    assert keys[:2] == ["sdk-access-replay-1"] * 2
    assert keys[2] is not None and keys[2] != "sdk-access-replay-1", "another access: the SDK's own key"


def test_capabilities_name_the_access_endpoint_and_active_planes(agent_url: str) -> None:
    caps = AOSClient(base_url=agent_url).get_capabilities()
    data_access = caps["data_access"]
    assert data_access["endpoint"] == "/api/v1/access"
    assert data_access["actions"] == ["query", "fetch", "call_tool"]
    assert PLANE in data_access["planes"]


def test_a_fetch_and_a_failed_fetch_that_is_not_retried(
    aos_system: AOSSystem, agent_url: str, web_plane: Upstream
) -> None:
    client, recorder = recording_client(agent_url)
    with client.run(agent_id=AGENT) as run:
        item = run.access(WEB_PLANE, "fetch", {"endpoint_id": "item", "params": {"id": "42"}})
        assert item.data == {"id": "42", "path": "/items/42"}
        assert (item.doc_ids, item.rows, item.source_id, item.outcome) == (["42"], None, "sdk-web", "CONTINUE")
        # A parameter stays in its path segment.
        escaped = run.access(WEB_PLANE, "fetch", {"endpoint_id": "item", "params": {"id": "../admin?x=1"}})
        assert escaped.data["path"] == "/items/..%2Fadmin%3Fx%3D1"

        # The upstream redirects: the agent refuses to follow, 502. The
        # access reached the source, so the SDK does not repeat it.
        before = recorder.paths().count("/api/v1/access")
        with pytest.raises(AccessFailed) as failed:
            run.access(WEB_PLANE, "fetch", {"endpoint_id": "moved"})
        err = failed.value
        assert (err.status, err.code, err.run_status, err.outcome) == (502, "REDIRECT_REFUSED", "running", "CONTINUE")
        assert (err.evidence_id or "").startswith("ev-") and "redirect" in str(err)
        assert recorder.paths().count("/api/v1/access") == before + 1, "a 502 access is not retried"
        assert web_plane.paths.count("/redirect") == 1
        assert not [p for p in web_plane.paths if "stolen" in p]

        # MCP is not executable: no source serves a tool.
        with pytest.raises(AccessDenied) as tool:
            run.access(WEB_PLANE, "call_tool", {"tool": "search", "arguments": {}})
        assert tool.value.code == "UNKNOWN_TARGET"
    assert client.get_run(run.id)["status"] == "succeeded"
    record = evidence(aos_system, run.id, 4)[err.evidence_id or ""]
    assert (record["outcome"], record["code"]) == ("FAILED", "REDIRECT_REFUSED")


def test_a_policy_kill_of_an_access_ends_the_run(agent_url: str, web_plane: Upstream) -> None:
    client, recorder = recording_client(agent_url)
    fetch = {"endpoint_id": "item", "params": {"id": "7"}}
    with client.run(agent_id=AGENT, api_key_id="key-contractor-1") as run:
        # SQL is not retrieval: pol-contractor-no-rag does not apply to it.
        assert run.access(PLANE, "query", by_topic("billing")).rows == 2
        served = len(web_plane.paths)
        with pytest.raises(AccessDenied) as denied:
            run.access(WEB_PLANE, "fetch", fetch)
        killed = denied.value
        assert isinstance(killed, AccessKilled) and isinstance(killed, PolicyKilled)
        assert (killed.status, killed.code, killed.outcome, killed.policy_id, killed.run_status) == (
            403,
            "POLICY_DENIED",
            "KILL",
            "pol-contractor-no-rag",
            "failed_policy",
        )
        assert killed.reasons == ("KILL by policy pol-contractor-no-rag v1: RAG_ACCESS breach, value 1 vs limit 0",)
        assert (killed.evidence_id or "").startswith("ev-") and killed.run_id == run.id
        assert len(web_plane.paths) == served, "the source was never called"
        assert run.ended and run.status == "failed_policy"

        # The run takes nothing further; its next step says why.
        with pytest.raises(PolicyKilled, match="pol-contractor-no-rag"):
            run.check_step(estimated_tokens=10)
        with pytest.raises(PolicyKilled, match="pol-contractor-no-rag"):
            run.access(PLANE, "query", by_topic("billing"))
    view = client.get_run(run.id)
    assert (view["status"], view["termination_reason"]) == ("failed_policy", "POLICY_BLOCK")
    assert not [p for p in recorder.paths() if p.endswith("/end")], "the killed run is not ended twice"


def test_a_policy_stop_of_an_access_ends_the_run(agent_url: str) -> None:
    """pol-analyst-rag: at most 100 SQL queries in a rolling hour for the
    analyst agent (counted over the tenant's queries: those of earlier
    tests count too), WARN from 80 %, STOP on breach."""
    client, recorder = recording_client(agent_url)
    results: list[AccessResult] = []
    with pytest.raises(AccessStopped) as stopped:
        with client.run(agent_id="analyst", goal="read the docs") as run:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(101):
                    results.append(run.access(PLANE, "query", by_topic("billing")))
    err = stopped.value
    assert isinstance(err, PolicyStopped) and isinstance(err, AccessDenied)
    assert (err.code, err.outcome, err.policy_id, err.run_status) == (
        "POLICY_DENIED",
        "STOP",
        "pol-analyst-rag",
        "failed_policy",
    )
    assert "DB_QUERIES" in err.reasons[0] and "vs limit 100" in err.reasons[0]
    assert run.status == "failed_policy" and run.ended
    # Every admitted query before it was CONTINUE or a warned WARN.
    outcomes = [r.outcome for r in results]
    assert set(outcomes) <= {"CONTINUE", "WARN"}
    policy_warnings = [w for w in caught if issubclass(w.category, AOSPolicyWarning)]
    assert len(policy_warnings) == outcomes.count("WARN")
    assert all(r.decision.policy_id == "pol-analyst-rag" for r in results if r.outcome == "WARN")
    view = client.get_run(run.id)
    assert (view["status"], view["termination_reason"], view["usage"]["db_queries"]) == (
        "failed_policy",
        "RATE_LIMITED",
        len(results),
    )
    assert not [p for p in recorder.paths() if p.endswith("/end")]


async def async_access_scenario(client: AsyncAOSClient) -> dict[str, Any]:
    """The billing query and the unknown plane, with the async client."""
    async with client.run(agent_id=AGENT) as run:
        docs = await client.access(plane=PLANE, action="query", payload=by_topic("billing"), run=run)
        by_handle = await run.access(PLANE, "query", by_topic("billing"))
        with pytest.raises(AccessDenied) as unknown:
            await run.access("kp-nowhere", "query", by_topic("billing"))
        with pytest.raises(InvalidParams):
            await client.access(PLANE, "query", by_topic(42), run=run.id)
    return {
        "result": result_view(docs),
        "same_by_handle": result_view(by_handle) == result_view(docs),
        "error": error_view(unknown.value),
        "status": (await client.get_run(run.id))["status"],
    }


def sync_access_scenario(client: AOSClient) -> dict[str, Any]:
    """The same, with the sync client."""
    with client.run(agent_id=AGENT) as run:
        docs = client.access(plane=PLANE, action="query", payload=by_topic("billing"), run=run)
        by_handle = run.access(PLANE, "query", by_topic("billing"))
        with pytest.raises(AccessDenied) as unknown:
            run.access("kp-nowhere", "query", by_topic("billing"))
        with pytest.raises(InvalidParams):
            client.access(PLANE, "query", by_topic(42), run=run.id)
    return {
        "result": result_view(docs),
        "same_by_handle": result_view(by_handle) == result_view(docs),
        "error": error_view(unknown.value),
        "status": client.get_run(run.id)["status"],
    }


EXPECTED_SCENARIO = {
    "result": EXPECTED_BILLING,
    "same_by_handle": True,
    "error": EXPECTED_UNKNOWN_PLANE,
    "status": "succeeded",
}


def test_the_sync_access_scenario(agent_url: str) -> None:
    assert sync_access_scenario(AOSClient(base_url=agent_url)) == EXPECTED_SCENARIO


@pytest.mark.asyncio
async def test_the_async_client_matches_the_sync_one(agent_url: str) -> None:
    recorder = Recorder()

    async def hook(request: httpx.Request) -> None:
        recorder(request)

    http = httpx.AsyncClient(event_hooks={"request": [hook]})
    async with AsyncAOSClient(base_url=agent_url, http_client=http) as client:
        assert await async_access_scenario(client) == EXPECTED_SCENARIO
    await http.aclose()
    assert recorder.paths().count("/api/v1/access") == 4
