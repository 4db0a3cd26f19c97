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
  decision behind it, when one is known;
- :func:`enforce_access` — a data access's
  :class:`~aos_sdk.results.AccessResult` → returned, warning on WARN; its error
  answers become :class:`~aos_sdk.errors.AccessDenied` (and its
  STOP/KILL/PAUSE subclasses), :class:`~aos_sdk.errors.InvalidParams` or
  :class:`~aos_sdk.errors.AccessFailed` in :func:`error_for`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .errors import (
    AccessDenied,
    AccessError,
    AccessFailed,
    AccessKilled,
    AccessPaused,
    AccessStopped,
    AgentError,
    AgentUnavailable,
    AOSError,
    AOSGovernanceWarning,
    AOSPolicyWarning,
    GovernanceDegraded,
    GovernanceHalted,
    InvalidParams,
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
from .protocol import ACCESS_PATH, Call
from .results import AccessResult, Decision, parse_access_decision

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
    if call.path == ACCESS_PATH:
        access_error = _access_error(status, code, message, body, call)
        if access_error is not None:
            return access_error
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


#: 403 codes of a refused data access: the plane gate's, and a policy's.
ACCESS_DENIED_CODES: frozenset[str] = frozenset(
    {"UNKNOWN_PLANE", "PLANE_INACTIVE", "PLANE_DENIED", "UNKNOWN_TARGET", "SOURCE_NOT_ENABLED", "POLICY_DENIED"}
)

#: The class of a ``POLICY_DENIED`` by outcome.
_ACCESS_BLOCKS: dict[str, type[AccessDenied]] = {
    "STOP": AccessStopped,
    "KILL": AccessKilled,
    "PAUSE": AccessPaused,
}


def _access_error(status: int, code: str | None, message: str, body: Any, call: Call) -> AccessError | None:
    """The typed error of a data access's refusal or failure; ``None`` for
    the answers every run endpoint gives (400 ``INVALID_INPUT``, 403
    ``FORBIDDEN``, 404, 409, 503), decoded as for any call."""
    request = call.json if isinstance(call.json, Mapping) else {}
    err = body["error"] if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping) else {}
    evidence_id = str(err["evidence_id"]) if err.get("evidence_id") is not None else None
    run_status = str(err["run_status"]) if err.get("run_status") is not None else None
    run_id = str(request["run_id"]) if request.get("run_id") is not None else None
    plane = str(request["plane"]) if request.get("plane") is not None else None
    action = str(request["action"]) if request.get("action") is not None else None
    decision = parse_access_decision(err.get("decision"), run_status=run_status, raw=body if err else {})
    kwargs: dict[str, Any] = {
        "evidence_id": evidence_id,
        "run_status": run_status,
        "decision": decision,
        "plane": plane,
        "action": action,
        "status": status,
        "code": code,
        "body": body,
        "run_id": run_id,
    }
    what = f"run {run_id}: {action} on plane {plane!r}"
    evidenced = f" (evidence {evidence_id})" if evidence_id else ""
    if status == 400 and code == "INVALID_PARAMS":
        return InvalidParams(f"the agent refused the request: {message}{evidenced}", **kwargs)
    if status == 403 and (code in ACCESS_DENIED_CODES or evidence_id is not None):
        cls = _ACCESS_BLOCKS.get(decision.outcome, AccessDenied) if decision is not None else AccessDenied
        why = decision.summary() if decision is not None and decision.reasons else message
        return cls(f"{what} refused ({code}): {why}{evidenced}", **kwargs)
    if status in (502, 504):
        return AccessFailed(f"{what} failed ({code or f'HTTP {status}'}): {message}{evidenced}", **kwargs)
    return None


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


def enforce_access(result: AccessResult, *, run_id: str, stacklevel: int) -> AccessResult:
    """Returns a data access's result; a WARN (or an outcome governance
    changed) is warned as for a step. ``stacklevel`` is as for
    :func:`warnings.warn` called where this function is called (2: that
    function's caller)."""
    # + _warn, enforce and this function.
    enforce(result.decision, run_id=run_id, phase="data access", resume=None, stacklevel=stacklevel + 3)
    return result


def with_resume(paused: AccessPaused, resume: Callable[..., Any] | None) -> AccessPaused:
    """The same PAUSE refusal of a data access, resumable through ``resume``
    (the run handle's or the client's)."""
    return AccessPaused(
        paused.message,
        resume=resume,
        evidence_id=paused.evidence_id,
        run_status=paused.run_status,
        decision=paused.decision,
        plane=paused.plane,
        action=paused.action,
        status=paused.status,
        code=paused.code,
        body=paused.body,
        run_id=paused.run_id,
    )
