"""Typed views of what the edge agent answers about a decision.

This module owns the *shape* of a decision as the SDK exposes it
(:class:`Decision`, :class:`Signal`) and how one is read from the agent's
JSON (:func:`parse_step_answer`, :func:`parse_simulation`). It neither sends
requests nor raises policy exceptions: that is :mod:`aos_sdk.decode`.

A step answer from ``POST /api/v1/runs/{run}/steps`` (or ``…/usage``) looks
like::

    {"step_id": "step-e1-…", "allowed": false, "run_status": "failed_policy",
     "decision": {"outcome": "STOP", "winning_policy": {"policy_id": "pol-run-tokens", …},
                  "signals": [{"kind": "TOKENS", "level": {"level": "BREACH"},
                               "value": 60000, "threshold": 50000, …}], …},
     "reasons": ["STOP by policy pol-run-tokens v1: TOKENS per run breach, value 60000 vs limit 50000"],
     "governance": {"enforced": "DOWNGRADED", "enforced_outcome": "WARN", "would_have_been": "STOP", …}}

``governance`` is present only when the tenant's governance state changed
what was enforced; :attr:`Decision.outcome` is then the *enforced* outcome
and :attr:`Decision.decided_outcome` what the policies decided.

A governed data access (``POST /api/v1/access``) answers with the data and
a summary of the decision (:func:`parse_access_answer` →
:class:`AccessResult`)::

    {"evidence_id": "ev-…", "plane_id": "kp-public-docs", "source_id": "kb-docs",
     "data": [{"id": "doc-1", …}], "doc_ids": ["doc-1"], "rows": 1, "truncated": false,
     "run_status": "running",
     "decision": {"outcome": "WARN", "policy_id": "pol-analyst-rag",
                  "reasons": ["WARN by policy pol-analyst-rag v1: DB_QUERIES …"], "governance": null}}

Its refusals carry the same summary in ``{"error": {…, "decision": …}}``
(:func:`parse_access_decision`).

A usage report whose ``response`` the agent checked against the documents
the run retrieved (the hallucination detector) also carries the check's
result (:class:`Grounding`, on :attr:`Decision.grounding`)::

    "grounding": {"method": "lexical-grounding/v1", "score": 1.0, "claims": 2, "unsupported": 2,
                  "unsupported_claims": ["Our support office is located on the moon.", …],
                  "unknown_citations": [], "truncated": false}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Outcomes, least restrictive first (the agent's ``Action``).
OUTCOMES: tuple[str, ...] = ("CONTINUE", "WARN", "PAUSE", "STOP", "KILL")

#: Run statuses after which the run accepts no step.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "failed_policy", "cancelled", "retry"})


@dataclass(frozen=True)
class Signal:
    """One limit or monitor that fired, with the value that fired it."""

    policy_id: str
    kind: str
    """``TOKENS``, ``COST_USD``, ``BURN_RATE_USD_PER_HOUR``, ``REQUESTS``, ``PII``, …"""
    level: str
    """``NEAR`` or ``BREACH``."""
    tier: int | None
    """For ``NEAR``: the highest alert tier (percent of the limit) reached."""
    value: int
    """The value including this step (tokens, micro-USD, …, as the agent counts them)."""
    threshold: int
    window: Any
    """The counter window as the agent spells it (``"PER_RUN"``, ``{"ROLLING": {"seconds": 900}}``…)."""
    blocking: bool
    overridden: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_breach(self) -> bool:
        """Whether the limit was exceeded (not only approached)."""
        return self.level == "BREACH"


@dataclass(frozen=True)
class Grounding:
    """The agent's grounding check of a reported response against the
    documents the run retrieved (the hallucination detector). Its
    :attr:`score` is evaluated by the run's policies as the step's
    hallucination score (or the workload's own ``hallucination_score``, when
    that is higher); a policy's hallucination monitor turns a score at or
    above its threshold into a ``HALLUCINATION`` signal (a WARN and a
    non-blocking incident, unless the policy opts in to blocking)."""

    method: str
    """How it was checked (``"lexical-grounding/v1"``)."""
    score: float
    """Hallucination score: 0.0 (every claim grounded) to 1.0 (nothing grounded)."""
    claims: int
    """Claims (sentences with content) checked."""
    unsupported: int
    """Claims no retrieved document supports."""
    unsupported_claims: tuple[str, ...]
    """The first few unsupported claims, as written in the response."""
    unknown_citations: tuple[str, ...]
    """Cited document ids (``[doc:ID]`` in the text, or ``cited_doc_ids``)
    the run never retrieved, the first few; each counts against the score."""
    truncated: bool
    """Whether the response was longer than what the agent checks (it checks
    a bounded prefix and number of claims)."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The agent's ``grounding`` object, as received."""


@dataclass(frozen=True)
class Decision:
    """A decision of the edge agent: for a step, a usage report or a simulation."""

    outcome: str
    """The outcome enforced: ``CONTINUE``, ``WARN``, ``PAUSE``, ``STOP`` or ``KILL``."""
    decided_outcome: str
    """What the policies decided; differs from :attr:`outcome` when governance
    state (DEGRADED, DISABLED) downgraded or bypassed it."""
    allowed: bool
    """Whether the step may proceed."""
    policy_id: str | None
    """The policy credited with the outcome (``None`` when nothing fired)."""
    policy_version: int | None
    reasons: tuple[str, ...]
    """Human-readable lines, one per policy that acted."""
    signals: tuple[Signal, ...]
    requires_ack: bool
    """A PAUSE that needs a named acknowledgement to resume."""
    governance: Mapping[str, Any] | None
    """The agent's governance annotation when it changed the outcome."""
    snapshot_version: int | None
    step_id: str | None = None
    """The step id (for the usage report); ``None`` for simulations."""
    run_status: str | None = None
    """The run's status after this step."""
    grounding: Grounding | None = None
    """For a usage report: the agent's grounding check of the response
    against what the run retrieved; ``None`` when it did not run (no
    ``response`` text, or a run that retrieved nothing)."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The agent's whole answer, as received."""

    @property
    def run_ended(self) -> bool:
        """Whether the run ended with this decision."""
        return self.run_status in TERMINAL_STATUSES

    def summary(self) -> str:
        """One line: the agent's reasons (which name outcome and policy), else the outcome."""
        if self.reasons:
            return "; ".join(self.reasons)
        return self.outcome + (f" by policy {self.policy_id}" if self.policy_id else "")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_grounding(raw: Any) -> Grounding | None:
    """Reads a usage answer's ``grounding`` object; ``None`` when absent, or
    when it has no usable score (not a number within 0..1)."""
    if not isinstance(raw, Mapping):
        return None
    score = raw.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    score = float(score)
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return None
    return Grounding(
        method=str(raw.get("method") or ""),
        score=score,
        claims=_int_or_none(raw.get("claims")) or 0,
        unsupported=_int_or_none(raw.get("unsupported")) or 0,
        unsupported_claims=_strings(raw.get("unsupported_claims")),
        unknown_citations=_strings(raw.get("unknown_citations")),
        truncated=bool(raw.get("truncated", False)),
        raw=raw,
    )


def parse_signal(raw: Mapping[str, Any]) -> Signal:
    """Reads one signal; the level is ``{"level": "NEAR", "tier": 80}`` on the wire."""
    level_raw = raw.get("level")
    if isinstance(level_raw, Mapping):
        level = str(level_raw.get("level", ""))
        tier = _int_or_none(level_raw.get("tier"))
    else:
        level, tier = str(level_raw or ""), None
    return Signal(
        policy_id=str(raw.get("policy_id", "")),
        kind=str(raw.get("kind", "")),
        level=level,
        tier=tier,
        value=int(raw.get("value") or 0),
        threshold=int(raw.get("threshold") or 0),
        window=raw.get("window"),
        blocking=bool(raw.get("blocking", False)),
        overridden=bool(raw.get("overridden", False)),
        raw=raw,
    )


def _decision(
    decision: Mapping[str, Any],
    reasons: Any,
    governance: Mapping[str, Any] | None,
    *,
    allowed: bool | None,
    step_id: str | None,
    run_status: str | None,
    raw: Mapping[str, Any],
    grounding: Grounding | None = None,
) -> Decision:
    decided = str(decision.get("outcome") or "CONTINUE")
    enforced = str(governance.get("enforced_outcome") or decided) if governance else decided
    winner = decision.get("winning_policy")
    winner = winner if isinstance(winner, Mapping) else {}
    signals = decision.get("signals") or []
    return Decision(
        outcome=enforced,
        decided_outcome=decided,
        allowed=allowed if allowed is not None else enforced in ("CONTINUE", "WARN"),
        policy_id=str(winner["policy_id"]) if winner.get("policy_id") is not None else None,
        policy_version=_int_or_none(winner.get("policy_version")),
        reasons=tuple(str(r) for r in (reasons or [])),
        signals=tuple(parse_signal(s) for s in signals if isinstance(s, Mapping)),
        requires_ack=bool(decision.get("requires_ack", False)),
        governance=governance,
        snapshot_version=_int_or_none(decision.get("snapshot_version")),
        step_id=step_id,
        run_status=run_status,
        grounding=grounding,
        raw=raw,
    )


def parse_step_answer(body: Mapping[str, Any]) -> Decision:
    """Reads the answer of a pre-step check or a usage report (with its
    ``grounding``, when the agent checked the response)."""
    decision = body.get("decision")
    governance = body.get("governance")
    return _decision(
        decision if isinstance(decision, Mapping) else {},
        body.get("reasons"),
        governance if isinstance(governance, Mapping) else None,
        allowed=bool(body.get("allowed")) if "allowed" in body else None,
        step_id=str(body["step_id"]) if body.get("step_id") is not None else None,
        run_status=str(body["run_status"]) if body.get("run_status") is not None else None,
        raw=body,
        grounding=parse_grounding(body.get("grounding")),
    )


def parse_simulation(body: Mapping[str, Any]) -> Decision:
    """Reads the answer of ``POST /api/v1/runtime/simulate`` (no side effects,
    no governance annotation: the evaluator's decision as is)."""
    decision = body.get("decision")
    return _decision(
        decision if isinstance(decision, Mapping) else {},
        body.get("reasons"),
        None,
        allowed=None,
        step_id=None,
        run_status=None,
        raw=body,
    )


@dataclass(frozen=True)
class AccessResult:
    """What a governed data access returned (``POST /api/v1/access``)."""

    evidence_id: str
    """The evidence record the agent wrote for this access (ids and hashes, never the data)."""
    plane_id: str
    """The knowledge plane."""
    source_id: str
    """The data source that served it."""
    data: Any
    """The data: rows (a list of objects) for SQL; the response body (JSON, or text) for HTTP."""
    doc_ids: list[str]
    """Ids of what was returned (the rows' ``id`` column, the item fetched…)."""
    rows: int | None
    """Rows returned (SQL); ``None`` for HTTP."""
    truncated: bool
    """More rows existed than the template allows."""
    run_status: str | None
    """The run's status after the access."""
    decision: Decision
    """The decision that admitted it: ``CONTINUE`` or ``WARN`` (warned), with
    the policy and reasons."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The agent's whole answer, as received."""

    @property
    def outcome(self) -> str:
        """``CONTINUE`` or ``WARN``."""
        return self.decision.outcome


def parse_access_decision(summary: Any, *, run_status: str | None, raw: Mapping[str, Any]) -> Decision | None:
    """Reads the decision summary of a data access (``None`` when no policy
    decided, e.g. the plane gate refused first). The summary has no signals;
    its ``outcome`` is the enforced one, and ``governance`` (when it changed
    the outcome) says what the policies decided."""
    if not isinstance(summary, Mapping):
        return None
    return _access_decision(summary, run_status=run_status, raw=raw)


def _access_decision(summary: Mapping[str, Any], *, run_status: str | None, raw: Mapping[str, Any]) -> Decision:
    governance = summary.get("governance")
    governance = governance if isinstance(governance, Mapping) else None
    outcome = str(summary.get("outcome") or "CONTINUE")
    decided = str(governance.get("would_have_been") or outcome) if governance else outcome
    policy_id = summary.get("policy_id")
    return Decision(
        outcome=outcome,
        decided_outcome=decided,
        allowed=outcome in ("CONTINUE", "WARN"),
        policy_id=str(policy_id) if policy_id is not None else None,
        policy_version=None,
        reasons=tuple(str(r) for r in (summary.get("reasons") or [])),
        signals=(),
        requires_ack=False,
        governance=governance,
        snapshot_version=None,
        step_id=None,
        run_status=run_status,
        raw=raw,
    )


def parse_access_answer(body: Mapping[str, Any]) -> AccessResult:
    """Reads the answer of a data access the agent admitted and served."""
    run_status = str(body["run_status"]) if body.get("run_status") is not None else None
    summary = body.get("decision")
    decision = _access_decision(summary if isinstance(summary, Mapping) else {}, run_status=run_status, raw=body)
    return AccessResult(
        evidence_id=str(body.get("evidence_id") or ""),
        plane_id=str(body.get("plane_id") or ""),
        source_id=str(body.get("source_id") or ""),
        data=body.get("data"),
        doc_ids=[str(d) for d in (body.get("doc_ids") or [])],
        rows=_int_or_none(body.get("rows")),
        truncated=bool(body.get("truncated", False)),
        run_status=run_status,
        decision=decision,
        raw=body,
    )
