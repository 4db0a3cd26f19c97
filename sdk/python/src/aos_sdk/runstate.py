"""What a run handle knows between calls, shared by :class:`aos_sdk.Run` and
:class:`aos_sdk.AsyncRun`: its id and scope, the open steps (for usage
reports), the last blocking decision (a step's or a data access's, to
explain a later 409), whether it
has ended (so it is never ended twice), and how a ``with`` block's exit
maps to ``/end`` or ``/cancel``. No I/O here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import protocol
from .errors import AccessError, AOSError, GovernanceHalted, PolicyKilled, PolicyStopped, RunEnded
from .protocol import Call
from .results import TERMINAL_STATUSES, Decision

#: Longest error text sent with ``/end`` (the agent keeps it as the run's detail).
MAX_ERROR_TEXT = 2000


def exit_call(run_id: str, exc: BaseException | None) -> Call:
    """How a run ends when its ``with`` block exits.

    - normally, or ``SystemExit(0)``: ``/end`` ``succeeded``;
    - ``KeyboardInterrupt`` or task cancellation: ``/cancel`` (status ``cancelled``);
    - any other exception: ``/end`` ``failed`` with ``"Type: message"``.
    """
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return protocol.end(run_id, status="succeeded")
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return protocol.cancel(run_id, reason=f"the workload was interrupted ({type(exc).__name__})")
    text = f"{type(exc).__name__}: {exc}"
    return protocol.end(run_id, status="failed", error=text[:MAX_ERROR_TEXT])


class RunState:
    """Local knowledge of one run (thread-safe)."""

    def __init__(self, *, run_id: str | None, scope: Mapping[str, Any], goal: str | None) -> None:
        self.run_id = run_id or protocol.new_run_id()
        self.scope = dict(scope)
        self.goal = goal
        self.view: dict[str, Any] | None = None
        self.last_decision: Decision | None = None
        self.last_block: Decision | None = None
        self._open_steps: list[str] = []
        self._ended = False
        self._status: str | None = None
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether the agent has the run."""
        return self.view is not None

    @property
    def ended(self) -> bool:
        """Whether the run is known to have ended (by this client, a policy or governance)."""
        return self._ended

    @property
    def status(self) -> str | None:
        """The last status the agent reported (run view or step answer)."""
        return self._status

    def remember_view(self, view: Any) -> None:
        """Takes a run view (start, get, resume, cancel, end)."""
        if not isinstance(view, Mapping):
            return
        with self._lock:
            self.view = dict(view)
            self._status = str(view.get("status")) if view.get("status") is not None else self._status
            if str(view.get("status")) in TERMINAL_STATUSES:
                self._ended = True
            elif view.get("status") == "running":
                self.last_block = None

    def remember_decision(self, decision: Decision, *, opened: bool) -> None:
        """Takes a step or usage answer; ``opened``: a pre-step check that admitted a step."""
        with self._lock:
            self.last_decision = decision
            if decision.run_status is not None:
                self._status = decision.run_status
            if opened and decision.allowed and decision.step_id:
                self._open_steps.append(decision.step_id)
            if decision.outcome in ("PAUSE", "STOP", "KILL") or not decision.allowed:
                self.last_block = decision
            if decision.run_status in TERMINAL_STATUSES:
                self._ended = True

    def remember_error(self, exc: AOSError) -> None:
        """Marks the run ended when an error says so."""
        if isinstance(exc, (RunEnded, PolicyStopped, PolicyKilled, GovernanceHalted)):
            with self._lock:
                self._ended = True

    def remember_access_error(self, exc: AccessError) -> None:
        """Takes a data access that returned no data: its decision, when a
        policy took one (a STOP or KILL ended the run, a PAUSE paused it)."""
        if exc.decision is not None:
            self.remember_decision(exc.decision, opened=False)
        self.remember_error(exc)

    def mark_ended(self) -> None:
        """After ``/end`` or ``/cancel`` was sent (whatever its answer)."""
        with self._lock:
            self._ended = True

    # -- calls ---------------------------------------------------------------
    def start_call(self) -> Call:
        """``POST /runs`` for this run (idempotent by run id)."""
        return protocol.start_run(run_id=self.run_id, scope=self.scope, goal=self.goal)

    def step_call(
        self,
        *,
        estimated_tokens: int,
        estimated_cost_usd: float,
        model: str | None,
        tool: str | None,
        prompt: str | None,
    ) -> Call:
        """The pre-step check of this run."""
        return protocol.pre_step(
            self.run_id,
            estimated_tokens=estimated_tokens,
            estimated_cost_usd=estimated_cost_usd,
            model=model,
            tool=tool,
            prompt=prompt,
        )

    def usage_call(
        self,
        step: Decision | str | None,
        *,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        response: str | None,
        prompt: str | None,
        model: str | None,
        hallucination_score: float | None,
        send_text: bool,
        cited_doc_ids: Sequence[str] | None,
    ) -> tuple[str, Call]:
        """The usage report for ``step`` (default: the last step admitted and
        not yet reported) and that step's id. Without ``send_text`` only the
        response's SHA-256 is sent (the agent takes no prompt hash).
        ``cited_doc_ids`` is checked before the step is taken, so a bad one
        leaves the step open."""
        cited = protocol.doc_id_list(cited_doc_ids)
        step_id = self.take_step(step)
        call = protocol.report_usage(
            self.run_id,
            step_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            model=model,
            prompt=prompt if send_text else None,
            response=response if send_text else None,
            response_hash=protocol.sha256_hex(response) if response is not None and not send_text else None,
            hallucination_score=hallucination_score,
            cited_doc_ids=cited,
        )
        return step_id, call

    def take_step(self, step: Decision | str | None) -> str:
        """The step a usage report is for: the given one, else the most recent
        admitted step not yet reported."""
        with self._lock:
            if isinstance(step, Decision):
                step = step.step_id
            if step is None:
                if not self._open_steps:
                    raise ValueError("no open step to report usage for: call check_step() first, or pass step=")
                return self._open_steps.pop()
            if step in self._open_steps:
                self._open_steps.remove(step)
            return step

    def restore_step(self, step_id: str) -> None:
        """Puts a step back after its report failed without an answer."""
        with self._lock:
            if step_id not in self._open_steps:
                self._open_steps.append(step_id)

    def access_call(
        self,
        *,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None,
        idempotency_key: str | None,
    ) -> Call:
        """A governed data access for this run."""
        return protocol.access(
            self.run_id, plane=plane, action=action, payload=payload, idempotency_key=idempotency_key
        )

    def exit_call(self, exc: BaseException | None) -> Call | None:
        """The call that ends the run on leaving its block, or ``None`` when
        it has ended already (a policy or governance ended it, or the caller
        did)."""
        if self._ended or not self.started:
            return None
        return exit_call(self.run_id, exc)
