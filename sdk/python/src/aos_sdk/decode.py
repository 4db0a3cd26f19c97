"""Answers into results or exceptions: the one place both clients (sync and
async) turn what the agent said into what the caller gets.

- :func:`answer_or_error` — an HTTP answer → its JSON body, or the typed
  :class:`~aos_sdk.errors.AOSError` for an error answer;
- :func:`unavailable` — a transport failure → :class:`~aos_sdk.errors.AgentUnavailable`
  with the URL and how to start the agent;
- :func:`enforce` — a step decision → returned (CONTINUE), returned with an
  :class:`~aos_sdk.errors.AOSPolicyWarning` (WARN, or governance changed it),
  or raised as :class:`~aos_sdk.errors.RunPaused` /
  :class:`~aos_sdk.errors.PolicyStopped` / :class:`~aos_sdk.errors.PolicyKilled`;
- :func:`explain_refusal` — a 409 at a step → the policy or governance
  decision behind it, when one is known.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .errors import (
    AgentError,
    AgentUnavailable,
    AOSError,
    AOSGovernanceWarning,
    AOSPolicyWarning,
    GovernanceDegraded,
    GovernanceHalted,
    InvalidRequest,
    PolicyError,
    PolicyKilled,
    PolicyStopped,
    RunConflict,
    RunEnded,
    RunNotFound,
    RunPaused,
    ServiceUnavailable,
    StepNotFound,
)
from .protocol import Call
from .results import Decision

log = logging.getLogger("aos_sdk")

#: How to start a local system, for messages about an agent that is not running.
START_HINT = (
    "Is the AOS edge agent running? For a local dev system run "
    "`cargo run -p aos-control-plane -- dev` (agent on http://127.0.0.1:8000), "
    "or pass base_url= / set AOS_AGENT_URL to the agent's address."
)

#: The run's termination detail when a governance HALT ended it (the agent
#: says so only in text; see the SDK README's notes on the agent API).
HALT_DETAIL_PREFIX = "governance HALTED"


def parse_json(content: bytes) -> Any:
    """The body as JSON, or the text when it is not JSON (``None`` when empty)."""
    if not content or not content.strip():
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def error_code(body: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` of an ``{"error": {"code", "message"}}`` body."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        code = err.get("code")
        message = err.get("message")
        return (str(code) if code is not None else None, str(message) if message is not None else None)
    return None, None


def error_for(status: int, body: Any, call: Call, url: str) -> AOSError:
    """The exception for an error answer."""
    code, message = error_code(body)
    if message is None:
        message = body if isinstance(body, str) and body else f"HTTP {status}"
    text = f"{call.method} {url}: {status} {code or ''} {message}".replace("  ", " ")
    kwargs: dict[str, Any] = {"status": status, "code": code, "body": body}
    if status == 400:
        return InvalidRequest(f"the agent refused the request: {message}", **kwargs)
    if status == 404 and code == "NOT_FOUND":
        if message.startswith("unknown run"):
            return RunNotFound(message, **kwargs)
        if "no open step" in message:
            return StepNotFound(message, **kwargs)
        return AgentError(text, **kwargs)
    if status == 409:
        if code == "RUN_PAUSED":
            return RunPaused(message, **kwargs)
        if code == "RUN_ENDED":
            return RunEnded(message, **kwargs)
        return RunConflict(message, **kwargs)
    if status == 503:
        if code == "GOVERNANCE_HALTED":
            return GovernanceHalted(message, **kwargs)
        if code == "GOVERNANCE_DEGRADED":
            return GovernanceDegraded(message, **kwargs)
        return ServiceUnavailable(f"the agent cannot serve this now ({code}): {message}", **kwargs)
    return AgentError(text, **kwargs)


def answer_or_error(status: int, content: bytes, call: Call, url: str) -> Any:
    """The JSON answer of a successful call; raises the typed error otherwise."""
    body = parse_json(content)
    if 200 <= status < 300 or status in call.ok_statuses:
        return body
    raise error_for(status, body, call, url)


def unavailable(exc: BaseException, url: str, attempts: int) -> AgentUnavailable:
    """The exception for a call that got no answer after ``attempts`` tries."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        what = f"the AOS edge agent at {url} did not answer in time{tries} ({type(exc).__name__})"
        return AgentUnavailable(f"{what}. Raise timeout= if it is busy.", url=url, cause=exc)
    what = f"cannot reach the AOS edge agent at {url}{tries}: {exc or type(exc).__name__}"
    return AgentUnavailable(f"{what}. {START_HINT}", url=url, cause=exc)


def _warn(decision: Decision, run_id: str | None, phase: str, stacklevel: int) -> None:
    where = f"run {run_id}" if run_id else "simulation"
    if decision.governance:
        g = decision.governance
        text = (
            f"AOS governance {g.get('mode')} {g.get('enforced')} {decision.decided_outcome} to "
            f"{decision.outcome} ({where}, {phase}): {decision.summary()}"
        )
        category: type[AOSPolicyWarning] = AOSGovernanceWarning
    else:
        text = f"AOS policy warning ({where}, {phase}): {decision.summary()}"
        category = AOSPolicyWarning
    log.warning(text, extra={"aos_decision": decision, "aos_run_id": run_id})
    warnings.warn(category(text, decision), stacklevel=stacklevel)


def enforce(
    decision: Decision,
    *,
    run_id: str,
    phase: str,
    resume: Callable[..., Any] | None,
    raise_on_block: bool = True,
    stacklevel: int = 4,
) -> Decision:
    """Applies a step decision for the caller: CONTINUE returns it, WARN (or
    an outcome governance changed) warns and returns it, PAUSE/STOP/KILL
    raise. With ``raise_on_block=False`` (usage reports: the call already
    happened) blocking outcomes are logged and warned instead; the next
    check raises."""
    outcome = decision.outcome
    if decision.allowed and outcome in ("CONTINUE", "WARN"):
        if outcome == "WARN" or decision.governance:
            _warn(decision, run_id, phase, stacklevel)
        return decision
    if not raise_on_block:
        _warn(decision, run_id, phase, stacklevel)
        return decision
    raise blocked(decision, run_id=run_id, resume=resume)


def blocked(decision: Decision, *, run_id: str, resume: Callable[..., Any] | None) -> PolicyError:
    """The exception for a decision that did not admit the step."""
    message = f"run {run_id}: {decision.summary()}"
    if decision.outcome == "PAUSE":
        ack = " (resume needs ack=<who acknowledges>)" if decision.requires_ack else ""
        return RunPaused(message + ack, decision=decision, resume=resume, run_id=run_id)
    if decision.outcome == "KILL":
        return PolicyKilled(message, decision=decision, run_id=run_id)
    if decision.outcome == "STOP":
        return PolicyStopped(message, decision=decision, run_id=run_id)
    return PolicyError(f"run {run_id}: step not allowed: {decision.summary()}", decision=decision, run_id=run_id)


def explain_refusal(
    exc: AOSError,
    *,
    run_id: str,
    last_block: Decision | None,
    run_view: Mapping[str, Any] | None,
    resume: Callable[..., Any] | None,
) -> AOSError:
    """A 409 at a step, said as what caused it: the pause or stop this client
    saw (e.g. in a usage report), a governance HALT (from the run's
    termination detail), or else the plain conflict."""
    if isinstance(exc, RunPaused):
        decision = last_block if last_block is not None and last_block.outcome == "PAUSE" else None
        return RunPaused(
            f"run {run_id} is paused" + (f": {decision.summary()}" if decision else f" ({exc.message})"),
            decision=decision,
            resume=resume,
            status=exc.status,
            code=exc.code,
            body=exc.body,
            run_id=run_id,
        )
    if isinstance(exc, RunEnded):
        if last_block is not None and last_block.outcome in ("STOP", "KILL"):
            return blocked(last_block, run_id=run_id, resume=None)
        detail = str((run_view or {}).get("termination_detail") or "")
        if detail.startswith(HALT_DETAIL_PREFIX):
            return GovernanceHalted(
                f"run {run_id} was ended by governance: {detail}",
                status=exc.status,
                code=exc.code,
                body=exc.body,
                run_id=run_id,
            )
        return RunEnded(
            exc.message,
            run=dict(run_view) if run_view is not None else None,
            status=exc.status,
            code=exc.code,
            body=exc.body,
            run_id=run_id,
        )
    return exc
