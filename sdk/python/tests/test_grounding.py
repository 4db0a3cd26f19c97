"""The hallucination detector (GAP-023) through the SDK, against the real
dev-mode agent: a usage report's ``response`` of a run that retrieved
documents (``kp-public-docs``, topic ``billing``: doc-1 "Refunds are issued
within 14 days of purchase.", doc-2 "Invoices are emailed on the first
business day of the month.") is checked against them, the answer carries
the check (:class:`aos_sdk.Grounding` on :attr:`Decision.grounding`), and the
demo policy ``pol-hallucination-watch`` (all runs, threshold 0.8, not
blocking) warns at a score of 0.8 or more and opens a non-blocking
HALLUCINATION incident at the control plane; the run goes on. A
``hallucination_score`` of the workload's own does not replace the check:
the higher of the two is decided on.

Also, without the system: how ``cited_doc_ids`` is sent and how a
``grounding`` object is read."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import AGENT, AOSSystem, Recorder, wait_until

from aos_sdk import AOSClient, AOSPolicyWarning, AsyncAOSClient, Decision, Grounding, Run, Signal
from aos_sdk.protocol import report_usage
from aos_sdk.results import parse_grounding, parse_step_answer

PLANE = "kp-public-docs"
BILLING = {"template_id": "docs-by-topic", "params": {"topic": "billing"}}
METHOD = "lexical-grounding/v1"
POLICY = "pol-hallucination-watch"

GROUNDED = "Refunds are issued within 14 days of purchase."
FABRICATED = "Refunds are issued within 60 days of purchase. Our support office is located on the moon."


@pytest.fixture()
def client(agent_url: str) -> Iterator[AOSClient]:
    """An SDK client of the dev agent, closed after the test."""
    with AOSClient(base_url=agent_url) as aos:
        yield aos


@pytest.fixture()
def recorded(agent_url: str) -> Iterator[tuple[AOSClient, Recorder]]:
    """An SDK client whose requests are recorded, closed after the test."""
    recorder = Recorder()
    with httpx.Client(event_hooks={"request": [recorder]}) as http:
        yield AOSClient(base_url=agent_url, http_client=http), recorder


def retrieve_billing(run: Run) -> None:
    """The run reads the billing docs (what its responses are checked against)."""
    docs = run.access(PLANE, "query", BILLING)
    assert docs.doc_ids == ["doc-1", "doc-2"]


def hallucination_signals(decision: Decision) -> list[Signal]:
    """The decision's HALLUCINATION signals."""
    return [s for s in decision.signals if s.kind == "HALLUCINATION"]


def usage_bodies(recorder: Recorder) -> list[dict[str, Any]]:
    """The JSON bodies of the usage reports the client sent."""
    return [json.loads(body) for _, path, body in recorder.bodies if path.endswith("/usage")]


def hallucination_incidents(aos_system: AOSSystem, run_id: str) -> list[dict[str, Any]]:
    """The control plane's HALLUCINATION incidents of a run."""
    answer = aos_system.cp("GET", f"/api/v1/tenants/demo/incidents?run_id={run_id}&category=HALLUCINATION")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["incidents"])


# -- against the real system -------------------------------------------------


def test_a_grounded_response_scores_low_and_raises_no_signal(
    aos_system: AOSSystem, recorded: tuple[AOSClient, Recorder]
) -> None:
    client, recorder = recorded
    with client.run(agent_id=AGENT, goal="answer a billing question") as run:
        retrieve_billing(run)
        run.check_step(estimated_tokens=200, model="gpt-test")
        with warnings.catch_warnings():
            warnings.simplefilter("error", AOSPolicyWarning)  # a CONTINUE does not warn
            usage = run.report_usage(input_tokens=150, output_tokens=20, response=GROUNDED, cited_doc_ids=["doc-1"])
        grounding = usage.grounding
        assert isinstance(grounding, Grounding), usage.raw
        assert grounding.method == METHOD
        assert grounding.score < 0.5, grounding
        assert (grounding.claims, grounding.unsupported) == (1, 0), grounding
        assert (grounding.unsupported_claims, grounding.unknown_citations, grounding.truncated) == ((), (), False)
        assert grounding.raw == usage.raw["grounding"]
        assert (usage.outcome, usage.allowed, usage.run_status) == ("CONTINUE", True, "running")
        assert not hallucination_signals(usage), usage.signals
        assert run.last_decision == usage
    assert client.get_run(run.id)["status"] == "succeeded"

    (sent,) = usage_bodies(recorder)
    assert sent["cited_doc_ids"] == ["doc-1"] and sent["response"] == GROUNDED
    # The check is recorded with the LLM call at the control plane.
    records = wait_until(
        f"the LLM run record of {run.id} at the control plane",
        lambda: aos_system.records(run.id, "LLM_RUN_RECORD") or None,
    )
    (record,) = records
    assert record["body"]["step_id"] == usage.step_id
    assert record["body"]["grounding"]["score"] == grounding.score


def test_a_fabricated_response_warns_and_opens_a_non_blocking_incident(
    aos_system: AOSSystem, client: AOSClient
) -> None:
    with client.run(agent_id=AGENT, goal="answer a billing question") as run:
        retrieve_billing(run)
        run.check_step(estimated_tokens=200)
        grounded = run.report_usage(input_tokens=150, output_tokens=20, response=GROUNDED)
        assert grounded.grounding is not None and grounded.grounding.score < 0.5
        assert not hallucination_signals(grounded)

        run.check_step(estimated_tokens=200)
        with pytest.warns(AOSPolicyWarning, match=POLICY) as caught:
            usage = run.report_usage(input_tokens=150, output_tokens=30, response=FABRICATED)
        grounding = usage.grounding
        assert grounding is not None, usage.raw
        assert grounding.method == METHOD and grounding.score >= 0.8, grounding
        assert (grounding.claims, grounding.unsupported, grounding.unknown_citations) == (2, 2, ()), grounding
        assert len(grounding.unsupported_claims) == 2, grounding
        assert "60 days" in grounding.unsupported_claims[0] and "moon" in grounding.unsupported_claims[1]

        # WARN: the step stays allowed and the run keeps running.
        assert (usage.outcome, usage.allowed, usage.run_status) == ("WARN", True, "running"), usage
        assert usage.policy_id == POLICY
        (signal,) = hallucination_signals(usage)
        assert (signal.policy_id, signal.level, signal.blocking) == (POLICY, "BREACH", False)
        assert signal.value == round(grounding.score * 1000) and signal.threshold == 800
        assert caught[0].message.decision == usage  # type: ignore[union-attr]
        assert not run.ended and run.status == "running"

        after = run.check_step(estimated_tokens=100)
        assert after.allowed and after.run_status == "running", after
        run.report_usage(input_tokens=50, output_tokens=50)
    assert client.get_run(run.id)["status"] == "succeeded", "a non-blocking hallucination does not fail the run"

    # At the control plane: one HALLUCINATION incident, not blocking, for the
    # fabricated step (the grounded one opened none).
    incidents = wait_until(
        f"a HALLUCINATION incident of {run.id} at the control plane",
        lambda: hallucination_incidents(aos_system, run.id) or None,
    )
    (incident,) = incidents
    assert (incident["category"], incident["blocking"], incident["run_id"]) == ("HALLUCINATION", False, run.id)
    assert incident["policy_id"] == POLICY
    assert incident["inflection"]["step_id"] == usage.step_id, incident


def test_a_citation_of_a_document_the_run_never_retrieved_counts_against_it(
    recorded: tuple[AOSClient, Recorder],
) -> None:
    client, recorder = recorded
    with client.run(agent_id=AGENT) as run:
        retrieve_billing(run)
        run.check_step(estimated_tokens=200)
        cited = run.report_usage(input_tokens=100, output_tokens=20, response=GROUNDED[:-1] + " [doc:doc-99].")
        assert cited.grounding is not None, cited.raw
        assert cited.grounding.unknown_citations == ("doc-99",)
        # One grounded claim and one unknown citation.
        assert (cited.grounding.claims, cited.grounding.unsupported, cited.grounding.score) == (1, 0, 0.5)
        assert cited.outcome == "CONTINUE" and not hallucination_signals(cited), "0.5 is under the threshold"

        # The ids a workload reports are checked as well; a retrieved one is no unknown.
        run.check_step(estimated_tokens=200)
        reported = run.report_usage(
            input_tokens=100, output_tokens=20, response=GROUNDED + " [doc:doc-1]", cited_doc_ids=("doc-2", "doc-77")
        )
        assert reported.grounding is not None, reported.raw
        assert reported.grounding.unknown_citations == ("doc-77",)
        assert reported.grounding.score < 0.5
    bodies = usage_bodies(recorder)
    assert "cited_doc_ids" not in bodies[0], "not sent when not given"
    assert bodies[1]["cited_doc_ids"] == ["doc-2", "doc-77"]


def test_a_run_that_retrieved_nothing_gets_no_grounding(client: AOSClient) -> None:
    with client.run(agent_id=AGENT) as run:
        run.check_step(estimated_tokens=200)
        with warnings.catch_warnings():
            warnings.simplefilter("error", AOSPolicyWarning)  # nothing to check against: no score, no warning
            usage = run.report_usage(input_tokens=100, output_tokens=20, response=FABRICATED, cited_doc_ids=["doc-1"])
        assert usage.grounding is None and "grounding" not in usage.raw, usage.raw
        assert usage.outcome == "CONTINUE" and not hallucination_signals(usage)


def test_the_higher_of_the_clients_score_and_the_checks_is_decided_on(client: AOSClient) -> None:
    with client.run(agent_id=AGENT) as run:
        retrieve_billing(run)
        # A fabricated response scored 0.1 by the workload: the check's 1.0 is what counts.
        run.check_step(estimated_tokens=200)
        with pytest.warns(AOSPolicyWarning, match=POLICY):
            low = run.report_usage(input_tokens=100, output_tokens=20, response=FABRICATED, hallucination_score=0.1)
        assert low.grounding is not None and low.grounding.score == 1.0, low.raw
        (signal,) = hallucination_signals(low)
        assert (low.outcome, low.allowed, signal.value) == ("WARN", True, 1000)

        # The other way round: a grounded response the workload scores 0.9 warns with its 0.9.
        run.check_step(estimated_tokens=200)
        with pytest.warns(AOSPolicyWarning, match=POLICY):
            high = run.report_usage(input_tokens=100, output_tokens=20, response=GROUNDED, hallucination_score=0.9)
        assert high.grounding is not None and high.grounding.score < 0.5, high.raw
        (signal,) = hallucination_signals(high)
        assert (high.outcome, high.allowed, signal.value) == ("WARN", True, 900)

        # Without response text there is nothing to check: the workload's score alone.
        run.check_step(estimated_tokens=200)
        with warnings.catch_warnings():
            warnings.simplefilter("error", AOSPolicyWarning)
            unchecked = run.report_usage(input_tokens=100, output_tokens=20, hallucination_score=0.2)
        assert unchecked.grounding is None and "grounding" not in unchecked.raw, unchecked.raw
        assert unchecked.outcome == "CONTINUE" and not hallucination_signals(unchecked)
        assert run.status == "running"


@pytest.mark.asyncio
async def test_the_async_run_reports_cited_doc_ids_and_reads_the_grounding(agent_url: str) -> None:
    recorder = Recorder()

    async def hook(request: httpx.Request) -> None:
        recorder(request)

    http = httpx.AsyncClient(event_hooks={"request": [hook]})
    async with AsyncAOSClient(base_url=agent_url, http_client=http) as client:
        async with client.run(agent_id=AGENT) as run:
            docs = await run.access(PLANE, "query", BILLING)
            assert docs.doc_ids == ["doc-1", "doc-2"]
            await run.check_step(estimated_tokens=200)
            usage = await run.report_usage(
                input_tokens=100, output_tokens=20, response=GROUNDED, cited_doc_ids=["doc-1", "doc-404"]
            )
            assert usage.grounding is not None, usage.raw
            assert (usage.grounding.method, usage.grounding.unknown_citations) == (METHOD, ("doc-404",))
            assert usage.grounding.unsupported == 0 and usage.grounding.score < 0.8
            assert run.last_decision == usage
    await http.aclose()
    (sent,) = usage_bodies(recorder)
    assert sent["cited_doc_ids"] == ["doc-1", "doc-404"]


# -- without the system --------------------------------------------------------


def test_cited_doc_ids_are_sent_only_when_given() -> None:
    assert "cited_doc_ids" not in report_usage("run-1", "step-1", response="x").json
    assert report_usage("run-1", "step-1", cited_doc_ids=("doc-1", "doc-2")).json["cited_doc_ids"] == [
        "doc-1",
        "doc-2",
    ]
    assert report_usage("run-1", "step-1", cited_doc_ids=[]).json["cited_doc_ids"] == []
    with pytest.raises(ValueError, match="sequence of document ids"):
        report_usage("run-1", "step-1", cited_doc_ids="doc-1")
    with pytest.raises(ValueError, match="non-empty string"):
        report_usage("run-1", "step-1", cited_doc_ids=["doc-1", 7])  # type: ignore[list-item]


def test_a_bad_cited_doc_ids_leaves_the_step_open() -> None:
    sent: list[httpx.Request] = []

    def agent(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path.endswith("/steps"):
            return httpx.Response(200, json={"step_id": "step-1", "allowed": True, "run_status": "running"})
        if request.url.path.endswith("/usage"):
            return httpx.Response(200, json={"step_id": "step-1", "allowed": True, "run_status": "running"})
        return httpx.Response(200, json={"run_id": "run-1", "status": "running"})

    with httpx.Client(transport=httpx.MockTransport(agent)) as http:
        run = AOSClient(base_url="http://agent.test", http_client=http).start_run(run_id="run-1")
        run.check_step(estimated_tokens=1)
        with pytest.raises(ValueError):
            run.report_usage(response="x", cited_doc_ids="doc-1")
        run.report_usage(response="x", cited_doc_ids=["doc-1"])  # the step is still open
    usage = [r for r in sent if r.url.path.endswith("/usage")]
    assert [r.url.path for r in usage] == ["/api/v1/runs/run-1/steps/step-1/usage"]
    assert json.loads(usage[0].content)["cited_doc_ids"] == ["doc-1"]


GROUNDING = {
    "method": METHOD,
    "score": 1.0,
    "claims": 2,
    "unsupported": 2,
    "unsupported_claims": ["Refunds are issued within 60 days of purchase.", "Our support office is on the moon."],
    "unknown_citations": ["doc-99"],
    "truncated": True,
}


def test_a_grounding_object_is_read_into_a_grounding() -> None:
    decision = parse_step_answer(
        {"step_id": "step-1", "allowed": True, "run_status": "running", "decision": {}, "grounding": GROUNDING}
    )
    assert decision.grounding == Grounding(
        method=METHOD,
        score=1.0,
        claims=2,
        unsupported=2,
        unsupported_claims=tuple(GROUNDING["unsupported_claims"]),  # type: ignore[arg-type]
        unknown_citations=("doc-99",),
        truncated=True,
    )
    assert decision.grounding is not None and decision.grounding.raw == GROUNDING
    with pytest.raises(AttributeError):
        decision.grounding.score = 0.0  # type: ignore[misc]
    assert parse_step_answer({"step_id": "step-1", "allowed": True}).grounding is None


@pytest.mark.parametrize(
    "raw",
    [None, "1.0", [], {}, {"score": "0.9"}, {"score": True}, {"score": 1.5}, {"score": -0.1}, {"score": float("nan")}],
)
def test_a_grounding_without_a_usable_score_is_none(raw: Any) -> None:
    assert parse_grounding(raw) is None


def test_a_partial_grounding_is_read_with_defaults() -> None:
    partial = parse_grounding({"score": 0, "claims": "3", "unsupported_claims": "nope", "unknown_citations": [7]})
    assert partial == Grounding(
        method="",
        score=0.0,
        claims=0,
        unsupported=0,
        unsupported_claims=(),
        unknown_citations=("7",),
        truncated=False,
    )
    assert partial is not None and type(partial.score) is float
