"""The synchronous client :class:`AOSClient` and its run handle :class:`Run`.

This module owns only the blocking I/O: the send/retry loop over
``httpx.Client`` and the methods that call it. Requests are built in
:mod:`aos_sdk.protocol`, answers decoded in :mod:`aos_sdk.decode`, run
bookkeeping kept in :mod:`aos_sdk.runstate` — all shared with
:mod:`aos_sdk.aio`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from . import decode, protocol
from .errors import AccessError, AccessPaused, AgentUnavailable, AOSError, AOSTimeout, RunEnded, RunPaused
from .protocol import Call
from .results import (
    TERMINAL_STATUSES,
    AccessResult,
    Decision,
    parse_access_answer,
    parse_simulation,
    parse_step_answer,
)
from .retry import RetryPolicy
from .runstate import RunState
from .transport import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Settings

log = logging.getLogger("aos_sdk")


class AOSClient:
    """Talks to the AOS edge agent's local API.

    ``base_url`` defaults to ``$AOS_AGENT_URL``, else ``http://127.0.0.1:8000``
    (the dev-mode agent); ``api_key`` (default ``$AOS_API_KEY``) is sent as
    ``Authorization: Bearer …``. ``timeout`` applies to each attempt;
    transient failures are retried up to ``max_retries`` times. Pass
    ``http_client`` to bring your own ``httpx.Client`` (proxies, TLS, hooks);
    its ``base_url`` is set to the agent's.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.settings = Settings.from_args(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry=retry,
            headers=headers,
        )
        if http_client is None:
            self._http = httpx.Client(timeout=self.settings.timeout)
            self._owns_http = True
        else:
            self._http = http_client
            self._owns_http = False
        self._http.base_url = httpx.URL(self.settings.base_url)
        self._http.headers.update(self.settings.default_headers())

    @property
    def base_url(self) -> str:
        """The agent's address."""
        return self.settings.base_url

    # -- plumbing ------------------------------------------------------------
    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self.settings.request_args(call))
            except httpx.TransportError as exc:
                delay = self.settings.transport_retry_delay(call, attempt)
                if delay is None:
                    raise self.settings.no_answer(call, exc, attempt + 1) from exc
                log.debug("retrying %s %s after %s", call.method, call.path, type(exc).__name__)
            else:
                delay = self.settings.retry_delay(call, attempt, response)
                if delay is None:
                    return self.settings.answer(call, response)
                log.debug("retrying %s %s after HTTP %s", call.method, call.path, response.status_code)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Closes the connection pool (not a client passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- system --------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The agent's ``/health``: snapshot, boot guard, outbox, governance…
        (returned also while the boot guard refuses runs)."""
        return dict(self._send(protocol.health()))

    def get_capabilities(self) -> dict[str, Any]:
        """What this agent enforces: outcomes, monitors, run statuses,
        default failure mode, conflict resolution, governance state."""
        return dict(self._send(protocol.capabilities()))

    def simulate(
        self,
        goal: str | None = None,
        agent_id: str | None = None,
        *,
        estimated_tokens: int = 0,
        estimated_cost_usd: float = 0.0,
        run_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        human_actor_id: str | None = None,
        session_id: str | None = None,
    ) -> Decision:
        """The decision a step would get, without side effects. ``goal`` is
        not sent (the agent has no field for it)."""
        scope = protocol.scope_fields(
            project_id=project_id,
            agent_id=agent_id,
            api_key_id=api_key_id,
            human_actor_id=human_actor_id,
            session_id=session_id,
        )
        call = protocol.simulate(
            scope=scope,
            estimated_tokens=estimated_tokens,
            estimated_cost_usd=estimated_cost_usd,
            run_id=run_id,
        )
        return parse_simulation(self._send(call))

    # -- runs by id ----------------------------------------------------------
    def post_goal(
        self,
        agent_id: str | None = None,
        goal: str | None = None,
        *,
        run_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        human_actor_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Starts a run and returns its view as the agent gives it (with the
        ``"goal"`` the agent stored), plus ``"id"`` (= ``run_id``)."""
        state = RunState(
            run_id=run_id,
            scope=protocol.scope_fields(
                project_id=project_id,
                agent_id=agent_id,
                api_key_id=api_key_id,
                human_actor_id=human_actor_id,
                session_id=session_id,
            ),
            goal=goal,
        )
        view = dict(self._send(state.start_call()))
        return {"id": view.get("run_id"), **view}

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's view: status, scope, usage, steps, termination reason."""
        return dict(self._send(protocol.get_run(run_id)))

    def poll_run(
        self,
        run_id: str,
        *,
        until_terminal: bool = True,
        timeout: float | None = 60.0,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """The run's view; with ``until_terminal``, polls until it has ended
        (raising :class:`AOSTimeout` after ``timeout`` seconds, ``None``: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get_run(run_id)
            if not until_terminal or view.get("status") in TERMINAL_STATUSES:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise AOSTimeout(f"run {run_id} is still {view.get('status')} after {timeout} s", run=view)
            pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            time.sleep(pause)

    def end_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> dict[str, Any]:
        """Ends a run with the workload's verdict: ``succeeded``, ``failed`` or ``retry``."""
        return dict(self._send(protocol.end(run_id, status=status, error=error)))

    def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        """Cancels a run (its cancel signal fires)."""
        return dict(self._send(protocol.cancel(run_id, reason=reason)))

    # -- governed data access ------------------------------------------------
    def access(
        self,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run: Run | str,
        idempotency_key: str | None = None,
    ) -> AccessResult:
        """A governed data access for ``run`` (a run handle, or a run id):
        ``action`` ``"query"`` (payload ``{"template_id", "params"}``),
        ``"fetch"`` (``{"endpoint_id", "params", "body"}``) or ``"call_tool"``
        (``{"tool", "arguments"}``) on the knowledge plane ``plane``. The agent
        decides (plane gate, then the run's policies), runs it through the
        source's connector and evidences it; no raw SQL, URL or tool can be
        named.

        Returns the :class:`AccessResult` (warning on WARN). Raises
        :class:`AccessDenied` (403; :class:`AccessStopped`,
        :class:`AccessKilled` or :class:`AccessPaused` when a policy decided),
        :class:`InvalidParams` (400 ``INVALID_PARAMS``), :class:`InvalidRequest`
        (other 400s), :class:`AccessFailed` (502/504, never retried),
        :class:`RunPaused`/:class:`RunEnded` (409) or :class:`RunNotFound`.
        Pass ``idempotency_key`` to repeat an access later and get the
        agent's first answer (for 15 minutes) instead of running it again."""
        if isinstance(run, Run):
            return run._access(plane, action, payload, idempotency_key=idempotency_key, stacklevel=3)
        if not isinstance(run, str):
            raise TypeError(f"run must be a Run handle or a run id, got {type(run).__name__}")
        run_id = run
        call = protocol.access(run_id, plane=plane, action=action, payload=payload, idempotency_key=idempotency_key)
        try:
            body = self._send(call)
        except AccessPaused as paused:
            raise decode.with_resume(paused, lambda ack=None: self._resume_run(run_id, ack)) from None
        return decode.enforce_access(parse_access_answer(body), run_id=run_id, stacklevel=2)

    def _resume_run(self, run_id: str, ack: str | None) -> dict[str, Any]:
        return dict(self._send(protocol.resume(run_id, acknowledged_by=ack)))

    # -- run handles ---------------------------------------------------------
    def run(
        self,
        agent_id: str | None = None,
        session_id: str | None = None,
        goal: str | None = None,
        *,
        run_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        human_actor_id: str | None = None,
    ) -> Run:
        """A run handle; ``with client.run(...) as run:`` starts the run on
        entry and ends it on exit (see :class:`Run`)."""
        scope = protocol.scope_fields(
            project_id=project_id,
            agent_id=agent_id,
            api_key_id=api_key_id,
            human_actor_id=human_actor_id,
            session_id=session_id,
        )
        return Run(self, RunState(run_id=run_id, scope=scope, goal=goal))

    def start_run(self, **kwargs: Any) -> Run:
        """Starts a run now and returns its handle (end it with
        :meth:`Run.end` or :meth:`Run.cancel`). Takes :meth:`run`'s arguments."""
        return self.run(**kwargs).start()


class Run:
    """One governed run. Use it as a context manager::

        with client.run(agent_id="research-bot", goal="summarise") as run:
            step = run.check_step(estimated_tokens=1200, model="gpt-4o")
            ...  # call the model
            run.report_usage(input_tokens=900, output_tokens=300, cost_usd=0.004)

    On exit the run ends ``succeeded``; on an exception ``failed``; on
    ``KeyboardInterrupt`` it is cancelled; a run a policy or governance
    ended already is left as it is.
    """

    def __init__(self, client: AOSClient, state: RunState) -> None:
        self._client = client
        self._state = state

    # -- identity ------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        """The run id."""
        return self._state.run_id

    run_id = id

    @property
    def goal(self) -> str | None:
        """The goal given at start (also stored on the run by the agent)."""
        return self._state.goal

    @property
    def status(self) -> str | None:
        """The last status the agent reported."""
        return self._state.status

    @property
    def ended(self) -> bool:
        """Whether the run is known to have ended."""
        return self._state.ended

    @property
    def info(self) -> dict[str, Any] | None:
        """The last run view received."""
        return self._state.view

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last step, usage report or data access."""
        return self._state.last_decision

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> Self:
        """Starts the run (idempotent: a retried start returns the same run)."""
        if not self._state.started:
            self._state.remember_view(self._client._send(self._state.start_call()))
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._state.exit_call(exc)
        if call is None:
            return
        try:
            self._state.remember_view(self._client._send(call))
        except RunEnded:
            pass  # ended meanwhile (governance, idle timeout): nothing to do
        except AOSError as end_error:
            if exc is None:
                raise
            log.warning("could not end run %s after %r: %s", self.id, exc, end_error)
        finally:
            self._state.mark_ended()

    def end(self, status: str = "succeeded", error: str | None = None) -> dict[str, Any]:
        """Ends the run: ``succeeded``, ``failed`` (with ``error``) or ``retry``."""
        view = self._client._send(protocol.end(self.id, status=status, error=error))
        self._state.remember_view(view)
        return dict(view)

    def cancel(self, reason: str | None = None) -> dict[str, Any]:
        """Cancels the run; work waiting on its cancel signal returns."""
        view = self._client._send(protocol.cancel(self.id, reason=reason))
        self._state.remember_view(view)
        return dict(view)

    def resume(self, ack: str | None = None) -> dict[str, Any]:
        """Resumes a paused run; ``ack`` names who acknowledges the pause
        (required when the pausing policy says so)."""
        view = self._client._send(protocol.resume(self.id, acknowledged_by=ack))
        self._state.remember_view(view)
        return dict(view)

    def refresh(self) -> dict[str, Any]:
        """Fetches the run's view from the agent."""
        view = self._client._send(protocol.get_run(self.id))
        self._state.remember_view(view)
        return dict(view)

    def wait_for_cancellation(self, timeout: float = 30.0) -> bool:
        """Blocks until the run is killed or cancelled (``True``) or ``timeout``
        seconds pass (``False``; at most 60 s per call)."""
        wait_ms = int(timeout * 1000)
        body = self._client._send(protocol.cancellation(self.id, wait_ms=wait_ms, timeout=timeout + 10))
        return bool(body.get("cancelled"))

    # -- steps ---------------------------------------------------------------
    def check_step(
        self,
        estimated_tokens: int = 0,
        estimated_cost_usd: float = 0.0,
        *,
        model: str | None = None,
        tool: str | None = None,
        prompt: str | None = None,
    ) -> Decision:
        """The pre-step check: returns the decision when the step may run
        (warning on WARN); raises :class:`RunPaused`, :class:`PolicyStopped`,
        :class:`PolicyKilled` or :class:`GovernanceHalted` when it may not.
        ``prompt`` (optional) lets the agent scan the text for PII."""
        call = self._state.step_call(
            estimated_tokens=estimated_tokens,
            estimated_cost_usd=estimated_cost_usd,
            model=model,
            tool=tool,
            prompt=prompt,
        )
        try:
            body = self._client._send(call)
        except (RunPaused, RunEnded) as refused:
            raise self._explain(refused) from None
        decision = parse_step_answer(body)
        self._state.remember_decision(decision, opened=True)
        return decode.enforce(decision, run_id=self.id, phase="pre-step", resume=self.resume)

    def report_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        *,
        response: str | None = None,
        prompt: str | None = None,
        model: str | None = None,
        hallucination_score: float | None = None,
        cited_doc_ids: Sequence[str] | None = None,
        step: Decision | str | None = None,
        send_text: bool = True,
    ) -> Decision:
        """Reports what the step's LLM call used (for ``step``, default the
        last step admitted). The agent hashes ``prompt``/``response`` and keeps
        the text only where every policy allows; with ``send_text=False`` only
        the response's SHA-256 is sent (the agent takes no prompt hash).

        The agent checks a ``response`` against the documents the run
        retrieved (:meth:`access`) and answers with the result on
        :attr:`Decision.grounding`; the policies evaluate the higher of its
        score and ``hallucination_score`` (a policy's hallucination monitor
        warns at its threshold). ``cited_doc_ids`` names the retrieved
        documents the response relies on (as ``[doc:ID]`` in the text does):
        an id the run never retrieved counts against the score.

        A STOP, KILL or PAUSE decided here does not raise (the call has
        happened): it is warned, and the next :meth:`check_step` raises it."""
        step_id, call = self._state.usage_call(
            step,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            response=response,
            prompt=prompt,
            model=model,
            hallucination_score=hallucination_score,
            send_text=send_text,
            cited_doc_ids=cited_doc_ids,
        )
        try:
            body = self._client._send(call)
        except AgentUnavailable:
            self._state.restore_step(step_id)  # no answer: the step may still be reported
            raise
        decision = parse_step_answer(body)
        self._state.remember_decision(decision, opened=False)
        return decode.enforce(decision, run_id=self.id, phase="usage", resume=self.resume, raise_on_block=False)

    # -- governed data access ------------------------------------------------
    def access(
        self,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> AccessResult:
        """A governed data access in this run; see :meth:`AOSClient.access`::

            docs = run.access("kp-public-docs", "query",
                              {"template_id": "docs-by-topic", "params": {"topic": "billing"}})
            docs.data, docs.doc_ids, docs.evidence_id

        A STOP or KILL raised here (:class:`AccessStopped`,
        :class:`AccessKilled`) has ended the run: leaving the ``with`` block
        does not end it again, and a later step raises the same decision."""
        return self._access(plane, action, payload, idempotency_key=idempotency_key, stacklevel=3)

    def _access(
        self,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None,
        stacklevel: int,
    ) -> AccessResult:
        call = self._state.access_call(plane=plane, action=action, payload=payload, idempotency_key=idempotency_key)
        try:
            body = self._client._send(call)
        except AccessError as refused:
            self._state.remember_access_error(refused)
            if isinstance(refused, AccessPaused):
                raise decode.with_resume(refused, self.resume) from None
            raise
        except (RunPaused, RunEnded) as refused:
            raise self._explain(refused) from None
        result = parse_access_answer(body)
        self._state.remember_decision(result.decision, opened=False)
        return decode.enforce_access(result, run_id=self.id, stacklevel=stacklevel)

    def _explain(self, refused: AOSError) -> AOSError:
        view = None
        if isinstance(refused, RunEnded):
            try:
                view = self.refresh()
            except AOSError:
                view = None
        error = decode.explain_refusal(
            refused, run_id=self.id, last_block=self._state.last_block, run_view=view, resume=self.resume
        )
        self._state.remember_error(error)
        return error
