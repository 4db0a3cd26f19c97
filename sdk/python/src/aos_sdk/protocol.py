"""Request building: one function per edge-agent endpoint, returning a
:class:`Call` that either client (sync or async) sends.

This module owns the wire spelling of requests (paths, field names,
units) and the idempotency key of each logical call; it does no I/O.
The agent refuses unknown fields, so only fields it accepts are sent.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

API = "/api/v1"


def new_idempotency_key() -> str:
    """A fresh key for one logical POST (reused across its retries)."""
    return str(uuid.uuid4())


def new_run_id() -> str:
    """A client-chosen run id (the agent's start is idempotent by run id, so a
    retried start cannot create a second run)."""
    return f"run-{uuid.uuid4().hex}"


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 text: the hash the agent records."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Call:
    """One logical request. ``idempotency_key`` is fixed when the call is
    built, so every retry of it carries the same key."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    ok_statuses: frozenset[int] = frozenset()
    """Non-2xx statuses whose body is still the answer (``/health`` answers 503)."""
    timeout: float | None = None
    """Overrides the client's timeout for this call (long polls)."""
    retry: bool = True
    final_statuses: frozenset[int] = frozenset()
    """Error statuses never retried for this call although the retry policy
    would (a data access's 502/504: the access may have had effects)."""
    idempotency_key: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.method == "POST" and self.idempotency_key is None:
            object.__setattr__(self, "idempotency_key", new_idempotency_key())


def _seg(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _id(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def health() -> Call:
    """``GET /health`` (503 while the boot guard is not validated, with the same body)."""
    return Call("GET", "/health", ok_statuses=frozenset({503}), retry=False)


def capabilities() -> Call:
    """``GET /api/v1/capabilities``."""
    return Call("GET", f"{API}/capabilities")


def scope_fields(
    *,
    project_id: str | None = None,
    agent_id: str | None = None,
    api_key_id: str | None = None,
    human_actor_id: str | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The run scope fields the agent accepts, without the absent ones."""
    return _drop_none(
        {
            "project_id": project_id,
            "agent_id": agent_id,
            "api_key_id": api_key_id,
            "human_actor_id": human_actor_id,
            "session_id": session_id,
        }
    )


def simulate(
    *,
    scope: Mapping[str, Any],
    estimated_tokens: int = 0,
    estimated_cost_usd: float = 0.0,
    run_id: str | None = None,
) -> Call:
    """``POST /api/v1/runtime/simulate``: a pre-step decision without side
    effects. The agent fills in the tenant; its scope object requires the
    field, so an empty one is sent. Cost goes in micro-USD, as the agent's
    step input counts it."""
    body: dict[str, Any] = {
        "scope": {"tenant_id": "", **scope},
        "step": {
            "phase": "PRE_STEP",
            "tokens": estimated_tokens,
            "cost": usd_to_micros(estimated_cost_usd),
        },
    }
    if run_id is not None:
        body["run_id"] = run_id
    return Call("POST", f"{API}/runtime/simulate", json=body)


def usd_to_micros(usd: float) -> int:
    """USD → integer micro-USD (the agent's unit), rounded to the nearest."""
    if not math.isfinite(usd):
        raise ValueError(f"cost must be a finite number of USD, got {usd!r}")
    return round(usd * 1_000_000)


def start_run(*, run_id: str, scope: Mapping[str, Any], goal: str | None = None) -> Call:
    """``POST /api/v1/runs`` with a client-chosen id (idempotent start); the
    goal, when given, is stored on the run by the agent."""
    body: dict[str, Any] = {"run_id": run_id, **scope}
    if goal is not None:
        body["goal"] = goal
    return Call("POST", f"{API}/runs", json=body)


def get_run(run_id: str) -> Call:
    """``GET /api/v1/runs/{run_id}``."""
    return Call("GET", f"{API}/runs/{_seg(run_id)}")


def pre_step(
    run_id: str,
    *,
    estimated_tokens: int = 0,
    estimated_cost_usd: float = 0.0,
    model: str | None = None,
    tool: str | None = None,
    prompt: str | None = None,
) -> Call:
    """``POST /api/v1/runs/{run_id}/steps``: the pre-step check (reserves the
    estimate when admitted). ``prompt`` is scanned for PII by the agent."""
    body = _drop_none(
        {
            "estimated_tokens": estimated_tokens,
            "estimated_cost_usd": estimated_cost_usd,
            "model": model,
            "tool": tool,
            "prompt": prompt,
        }
    )
    return Call("POST", f"{API}/runs/{_seg(run_id)}/steps", json=body)


def report_usage(
    run_id: str,
    step_id: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: float = 0.0,
    model: str | None = None,
    prompt: str | None = None,
    response: str | None = None,
    response_hash: str | None = None,
    hallucination_score: float | None = None,
    cited_doc_ids: Sequence[str] | None = None,
) -> Call:
    """``POST /api/v1/runs/{run_id}/steps/{step_id}/usage``. The agent hashes
    ``prompt``/``response`` text itself and stores the text only when every
    policy allows; ``response_hash`` stands in when the text is withheld.
    The agent checks a ``response`` of a run that retrieved documents
    against them (``cited_doc_ids``: the ids the response relies on, sent
    only when given)."""
    body = _drop_none(
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost_usd,
            "model": model,
            "prompt": prompt,
            "response": response,
            "response_hash": response_hash,
            "hallucination_score": hallucination_score,
            "cited_doc_ids": doc_id_list(cited_doc_ids),
        }
    )
    return Call("POST", f"{API}/runs/{_seg(run_id)}/steps/{_seg(step_id)}/usage", json=body)


def doc_id_list(ids: Sequence[str] | None) -> list[str] | None:
    """Document ids as a list (``None`` stays absent); a lone string is
    refused rather than sent as its characters."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise ValueError(f"cited_doc_ids must be a sequence of document ids, got {ids!r}")
    for doc_id in ids:
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"a cited document id must be a non-empty string, got {doc_id!r}")
    return list(ids)


def resume(run_id: str, *, acknowledged_by: str | None = None) -> Call:
    """``POST /api/v1/runs/{run_id}/resume``."""
    return Call("POST", f"{API}/runs/{_seg(run_id)}/resume", json=_drop_none({"acknowledged_by": acknowledged_by}))


def cancel(run_id: str, *, reason: str | None = None) -> Call:
    """``POST /api/v1/runs/{run_id}/cancel`` (fires the run's cancel signal)."""
    return Call("POST", f"{API}/runs/{_seg(run_id)}/cancel", json=_drop_none({"reason": reason}))


#: Final statuses a workload may set through ``/end``.
END_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "retry"})


def end(run_id: str, *, status: str, error: str | None = None) -> Call:
    """``POST /api/v1/runs/{run_id}/end`` with ``succeeded``, ``failed`` or ``retry``."""
    if status not in END_STATUSES:
        raise ValueError(f"a run ends as one of {sorted(END_STATUSES)}, not {status!r} (use cancel() to cancel it)")
    return Call("POST", f"{API}/runs/{_seg(run_id)}/end", json=_drop_none({"status": status, "error": error}))


def cancellation(run_id: str, *, wait_ms: int, timeout: float) -> Call:
    """``GET /api/v1/runs/{run_id}/cancellation?wait_ms=N``: long-polls the
    cancel signal (at most 60 s on the agent's side)."""
    return Call(
        "GET",
        f"{API}/runs/{_seg(run_id)}/cancellation",
        params={"wait_ms": max(0, min(wait_ms, 60_000))},
        timeout=timeout,
    )


#: ``POST /api/v1/access``: the only data access there is, all of it governed.
ACCESS_PATH = f"{API}/access"

#: The actions the agent mediates, with their payload fields:
#: ``query`` (SQL template) ``{template_id, params}``, ``fetch`` (HTTP
#: endpoint) ``{endpoint_id, params, body}``, ``call_tool`` (MCP) ``{tool, arguments}``.
ACCESS_ACTIONS: tuple[str, ...] = ("query", "fetch", "call_tool")

#: Statuses of a data access that come from its connector, after the access
#: was admitted and may have reached the source: never retried (the agent
#: does not keep 5xx answers for replay, so a retry would run it again).
ACCESS_FINAL_STATUSES: frozenset[int] = frozenset({502, 504})


def access(
    run_id: str,
    *,
    plane: str,
    action: str,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Call:
    """``POST /api/v1/access``: a governed data access for the run. The
    agent checks the action and the payload's fields (no raw SQL, URL or
    tool can be expressed); the SDK sends them as given.

    Retried only where no effect can have happened or the agent replays it:
    a 503 (refused before anything ran) and a lost answer (the retry carries
    the same ``Idempotency-Key``); 502/504 are final. ``idempotency_key``
    lets a caller repeat the same access later and get the first answer."""
    if payload is not None and not isinstance(payload, Mapping):
        raise ValueError(f"payload must be a mapping, got {type(payload).__name__}")
    body = {
        "run_id": _id("run", run_id),
        "plane": _id("plane", plane),
        "action": _id("action", action),
        "payload": dict(payload or {}),
    }
    return Call(
        "POST",
        ACCESS_PATH,
        json=body,
        final_statuses=ACCESS_FINAL_STATUSES,
        idempotency_key=idempotency_key,
    )
