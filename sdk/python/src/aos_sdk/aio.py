"""The asyncio client :class:`AsyncAOSClient` and its run handle :class:`AsyncRun`.

Same surface as :mod:`aos_sdk.client`, awaitable. This module owns only the
non-blocking I/O (the send/retry loop over ``httpx.AsyncClient`` and
``asyncio.sleep``); requests, decoding and run bookkeeping are the shared
:mod:`aos_sdk.protocol`, :mod:`aos_sdk.decode` and :mod:`aos_sdk.runstate`.
"""

from __future__ import annotations

import asyncio
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


class AsyncAOSClient:
    """Async twin of :class:`aos_sdk.AOSClient` (same arguments)."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
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
            self._http = httpx.AsyncClient(timeout=self.settings.timeout)
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
    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self.settings.request_args(call))
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
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Closes the connection pool (not a client passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- system --------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.health`."""
        return dict(await self._send(protocol.health()))

    async def get_capabilities(self) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.get_capabilities`."""
        return dict(await self._send(protocol.capabilities()))

    async def simulate(
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
        """See :meth:`aos_sdk.AOSClient.simulate`."""
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
        return parse_simulation(await self._send(call))

    # -- runs by id ----------------------------------------------------------
    async def post_goal(
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
        """See :meth:`aos_sdk.AOSClient.post_goal`."""
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
        view = dict(await self._send(state.start_call()))
        return {"id": view.get("run_id"), **view}

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.get_run`."""
        return dict(await self._send(protocol.get_run(run_id)))

    async def poll_run(
        self,
        run_id: str,
        *,
        until_terminal: bool = True,
        timeout: float | None = 60.0,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.poll_run`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = await self.get_run(run_id)
            if not until_terminal or view.get("status") in TERMINAL_STATUSES:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise AOSTimeout(f"run {run_id} is still {view.get('status')} after {timeout} s", run=view)
            pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def end_run(self, run_id: str, status: str = "succeeded", error: str | None = None) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.end_run`."""
        return dict(await self._send(protocol.end(run_id, status=status, error=error)))

    async def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        """See :meth:`aos_sdk.AOSClient.cancel_run`."""
        return dict(await self._send(protocol.cancel(run_id, reason=reason)))

    # -- governed data access ------------------------------------------------
    async def access(
        self,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run: AsyncRun | str,
        idempotency_key: str | None = None,
    ) -> AccessResult:
        """See :meth:`aos_sdk.AOSClient.access` (``run``: an :class:`AsyncRun` or a run id)."""
        if isinstance(run, AsyncRun):
            return await run._access(plane, action, payload, idempotency_key=idempotency_key, stacklevel=3)
        if not isinstance(run, str):
            raise TypeError(f"run must be an AsyncRun handle or a run id, got {type(run).__name__}")
        run_id = run
        call = protocol.access(run_id, plane=plane, action=action, payload=payload, idempotency_key=idempotency_key)
        try:
            body = await self._send(call)
        except AccessPaused as paused:
            raise decode.with_resume(paused, lambda ack=None: self._resume_run(run_id, ack)) from None
        return decode.enforce_access(parse_access_answer(body), run_id=run_id, stacklevel=2)

    async def _resume_run(self, run_id: str, ack: str | None) -> dict[str, Any]:
        return dict(await self._send(protocol.resume(run_id, acknowledged_by=ack)))

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
    ) -> AsyncRun:
        """A run handle: ``async with client.run(...) as run:``."""
        scope = protocol.scope_fields(
            project_id=project_id,
            agent_id=agent_id,
            api_key_id=api_key_id,
            human_actor_id=human_actor_id,
            session_id=session_id,
        )
        return AsyncRun(self, RunState(run_id=run_id, scope=scope, goal=goal))

    async def start_run(self, **kwargs: Any) -> AsyncRun:
        """Starts a run now and returns its handle."""
        return await self.run(**kwargs).start()


class AsyncRun:
    """Async twin of :class:`aos_sdk.Run`: ``async with client.run(...) as run``."""

    def __init__(self, client: AsyncAOSClient, state: RunState) -> None:
        self._client = client
        self._state = state

    def __repr__(self) -> str:
        return f"AsyncRun(id={self.id!r}, status={self.status!r})"

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

    async def start(self) -> Self:
        """Starts the run (idempotent)."""
        if not self._state.started:
            self._state.remember_view(await self._client._send(self._state.start_call()))
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._state.exit_call(exc)
        if call is None:
            return
        try:
            self._state.remember_view(await self._client._send(call))
        except RunEnded:
            pass
        except AOSError as end_error:
            if exc is None:
                raise
            log.warning("could not end run %s after %r: %s", self.id, exc, end_error)
        finally:
            self._state.mark_ended()

    async def end(self, status: str = "succeeded", error: str | None = None) -> dict[str, Any]:
        """See :meth:`aos_sdk.Run.end`."""
        view = await self._client._send(protocol.end(self.id, status=status, error=error))
        self._state.remember_view(view)
        return dict(view)

    async def cancel(self, reason: str | None = None) -> dict[str, Any]:
        """See :meth:`aos_sdk.Run.cancel`."""
        view = await self._client._send(protocol.cancel(self.id, reason=reason))
        self._state.remember_view(view)
        return dict(view)

    async def resume(self, ack: str | None = None) -> dict[str, Any]:
        """See :meth:`aos_sdk.Run.resume`."""
        view = await self._client._send(protocol.resume(self.id, acknowledged_by=ack))
        self._state.remember_view(view)
        return dict(view)

    async def refresh(self) -> dict[str, Any]:
        """See :meth:`aos_sdk.Run.refresh`."""
        view = await self._client._send(protocol.get_run(self.id))
        self._state.remember_view(view)
        return dict(view)

    async def wait_for_cancellation(self, timeout: float = 30.0) -> bool:
        """See :meth:`aos_sdk.Run.wait_for_cancellation`."""
        wait_ms = int(timeout * 1000)
        body = await self._client._send(protocol.cancellation(self.id, wait_ms=wait_ms, timeout=timeout + 10))
        return bool(body.get("cancelled"))

    async def check_step(
        self,
        estimated_tokens: int = 0,
        estimated_cost_usd: float = 0.0,
        *,
        model: str | None = None,
        tool: str | None = None,
        prompt: str | None = None,
    ) -> Decision:
        """See :meth:`aos_sdk.Run.check_step`."""
        call = self._state.step_call(
            estimated_tokens=estimated_tokens,
            estimated_cost_usd=estimated_cost_usd,
            model=model,
            tool=tool,
            prompt=prompt,
        )
        try:
            body = await self._client._send(call)
        except (RunPaused, RunEnded) as refused:
            raise await self._explain(refused) from None
        decision = parse_step_answer(body)
        self._state.remember_decision(decision, opened=True)
        return decode.enforce(decision, run_id=self.id, phase="pre-step", resume=self.resume)

    async def report_usage(
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
        """See :meth:`aos_sdk.Run.report_usage`."""
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
            body = await self._client._send(call)
        except AgentUnavailable:
            self._state.restore_step(step_id)  # no answer: the step may still be reported
            raise
        decision = parse_step_answer(body)
        self._state.remember_decision(decision, opened=False)
        return decode.enforce(decision, run_id=self.id, phase="usage", resume=self.resume, raise_on_block=False)

    async def access(
        self,
        plane: str,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> AccessResult:
        """See :meth:`aos_sdk.Run.access`."""
        return await self._access(plane, action, payload, idempotency_key=idempotency_key, stacklevel=3)

    async def _access(
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
            body = await self._client._send(call)
        except AccessError as refused:
            self._state.remember_access_error(refused)
            if isinstance(refused, AccessPaused):
                raise decode.with_resume(refused, self.resume) from None
            raise
        except (RunPaused, RunEnded) as refused:
            raise await self._explain(refused) from None
        result = parse_access_answer(body)
        self._state.remember_decision(result.decision, opened=False)
        return decode.enforce_access(result, run_id=self.id, stacklevel=stacklevel)

    async def _explain(self, refused: AOSError) -> AOSError:
        view = None
        if isinstance(refused, RunEnded):
            try:
                view = await self.refresh()
            except AOSError:
                view = None
        error = decode.explain_refusal(
            refused, run_id=self.id, last_block=self._state.last_block, run_view=view, resume=self.resume
        )
        self._state.remember_error(error)
        return error
