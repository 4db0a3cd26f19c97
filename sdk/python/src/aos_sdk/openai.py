"""Metering for the official ``openai`` client (``pip install aos-sdk[openai]``).

One line wraps a client; every ``chat.completions.create`` is then governed::

    from openai import OpenAI
    from aos_sdk import AOSClient
    from aos_sdk.openai import wrap_openai

    aos = AOSClient()
    with aos.run(agent_id="research-bot") as run:
        client = wrap_openai(OpenAI(), run=run)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[...])

Each call does a pre-step check with an estimate (prompt characters / 4 plus
``max_completion_tokens``/``max_tokens``, else ``default_max_tokens``), raises
the SDK's typed exceptions when the check refuses (the model is not called),
calls the model, then reports the actual usage from the response's ``usage``
(``prompt_tokens``, ``completion_tokens``). A failed model call reports zero
usage, which releases the step's reservation. Without ``run``, pass ``aos=``
(and run arguments such as ``agent_id``): each call is then its own run.

``AsyncOpenAI`` clients are wrapped the same way with an ``AsyncRun`` /
``AsyncAOSClient``. Everything else on the client passes through unmetered
(streaming completions are refused rather than left unmetered).

This module owns only the adaptation to OpenAI's types; the governance
calls are :class:`aos_sdk.Run` / :class:`aos_sdk.AsyncRun`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .aio import AsyncAOSClient, AsyncRun
from .client import AOSClient, Run
from .results import Decision

log = logging.getLogger("aos_sdk")

#: Output tokens assumed when the request sets no maximum.
DEFAULT_MAX_TOKENS = 1024

#: ``cost(model, input_tokens, output_tokens) -> USD``.
CostFunction = Callable[[str | None, int, int], float]


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def messages_text(messages: Iterable[Any] | None) -> str:
    """The text of chat messages (string contents and ``text`` parts), one per line."""
    lines: list[str] = []
    for message in messages or []:
        content = _get(message, "content")
        if isinstance(content, str):
            lines.append(content)
        elif isinstance(content, Iterable):
            for part in content:
                text = _get(part, "text")
                if isinstance(text, str):
                    lines.append(text)
    return "\n".join(lines)


def estimate_tokens(text: str, max_output_tokens: int | None, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """A pre-step estimate: ``ceil(len(text) / 4)`` + the output maximum."""
    output = max_output_tokens if isinstance(max_output_tokens, int) and max_output_tokens > 0 else default_max_tokens
    return math.ceil(len(text) / 4) + output


@dataclass
class Meter:
    """What a wrapped client needs to govern a call: the run (or how to start
    one per call), the estimate's defaults, an optional cost function, and
    whether prompt/response text goes to the agent (hashes only otherwise)."""

    run: Run | AsyncRun | None = None
    aos: AOSClient | AsyncAOSClient | None = None
    run_kwargs: dict[str, Any] = field(default_factory=dict)
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    cost: CostFunction | None = None
    send_text: bool = True
    last_decision: Decision | None = None
    """The decision of the last usage report."""

    def plan(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """The pre-step check's arguments for a ``create(**kwargs)``, and the prompt text."""
        if kwargs.get("stream"):
            raise NotImplementedError(
                "aos_sdk.openai does not meter streaming completions yet: call create() without stream=True"
            )
        text = messages_text(kwargs.get("messages"))
        limit = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
        output = limit if isinstance(limit, int) and limit > 0 else self.default_max_tokens
        prompt_tokens = estimate_tokens(text, output) - output
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        check = {
            "estimated_tokens": prompt_tokens + output,
            "estimated_cost_usd": self.cost(model, prompt_tokens, output) if self.cost else 0.0,
            "model": model,
            "prompt": text if self.send_text else None,
        }
        return check, text

    def usage(self, completion: Any, check: Mapping[str, Any], prompt: str) -> dict[str, Any]:
        """The usage report's arguments for a completion."""
        choices = _get(completion, "choices") or []
        message = _get(choices[0], "message") if choices else None
        response = _get(message, "content") if message is not None else None
        response = response if isinstance(response, str) else None
        usage = _get(completion, "usage")
        model = _get(completion, "model") or check.get("model")
        if usage is not None and _get(usage, "prompt_tokens") is not None:
            input_tokens = int(_get(usage, "prompt_tokens") or 0)
            output_tokens = int(_get(usage, "completion_tokens") or 0)
        else:
            input_tokens = math.ceil(len(prompt) / 4)
            output_tokens = math.ceil(len(response or "") / 4)
            log.warning(
                "the completion has no usage: reporting an estimate (%d in, %d out)",
                input_tokens,
                output_tokens,
            )
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": self.cost(model, input_tokens, output_tokens) if self.cost else 0.0,
            "response": response,
            "prompt": prompt,
            "model": model if isinstance(model, str) else None,
            "send_text": self.send_text,
        }


class _Passthrough:
    """Delegates every attribute it does not define to the wrapped object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _Completions(_Passthrough):
    def __init__(self, target: Any, meter: Meter) -> None:
        super().__init__(target)
        self._meter = meter

    def create(self, *args: Any, **kwargs: Any) -> Any:
        """``chat.completions.create``, governed by the run."""
        meter = self._meter
        if meter.run is not None:
            if not isinstance(meter.run, Run):
                raise TypeError("a sync OpenAI client needs a sync aos_sdk.Run")
            return self._metered(meter.run, args, kwargs)
        if not isinstance(meter.aos, AOSClient):
            raise TypeError("wrap_openai needs run= (a Run) or aos= (an AOSClient)")
        with meter.aos.run(**meter.run_kwargs) as run:
            return self._metered(run, args, kwargs)

    def _metered(self, run: Run, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        check, prompt = self._meter.plan(kwargs)
        step = run.check_step(**check)
        try:
            completion = self._target.create(*args, **kwargs)
        except BaseException:
            try:
                run.report_usage(step=step, send_text=False)
            except Exception as report_error:  # the model call's error matters more
                log.warning("could not release step %s of run %s: %s", step.step_id, run.id, report_error)
            raise
        self._meter.last_decision = run.report_usage(step=step, **self._meter.usage(completion, check, prompt))
        return completion


class _AsyncCompletions(_Passthrough):
    def __init__(self, target: Any, meter: Meter) -> None:
        super().__init__(target)
        self._meter = meter

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        """``chat.completions.create``, governed by the run."""
        meter = self._meter
        if meter.run is not None:
            if not isinstance(meter.run, AsyncRun):
                raise TypeError("an AsyncOpenAI client needs an aos_sdk.AsyncRun")
            return await self._metered(meter.run, args, kwargs)
        if not isinstance(meter.aos, AsyncAOSClient):
            raise TypeError("wrap_openai(AsyncOpenAI) needs run= (an AsyncRun) or aos= (an AsyncAOSClient)")
        async with meter.aos.run(**meter.run_kwargs) as run:
            return await self._metered(run, args, kwargs)

    async def _metered(self, run: AsyncRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        check, prompt = self._meter.plan(kwargs)
        step = await run.check_step(**check)
        try:
            completion = await self._target.create(*args, **kwargs)
        except BaseException:
            try:
                await run.report_usage(step=step, send_text=False)
            except Exception as report_error:
                log.warning("could not release step %s of run %s: %s", step.step_id, run.id, report_error)
            raise
        self._meter.last_decision = await run.report_usage(step=step, **self._meter.usage(completion, check, prompt))
        return completion


class _Chat(_Passthrough):
    def __init__(self, target: Any, completions: Any) -> None:
        super().__init__(target)
        self.completions = completions


class MeteredOpenAI(_Passthrough):
    """An ``openai.OpenAI`` whose ``chat.completions.create`` is governed; made by :func:`wrap_openai`."""

    def __init__(self, client: Any, meter: Meter) -> None:
        super().__init__(client)
        self.meter = meter
        self.chat = _Chat(client.chat, _Completions(client.chat.completions, meter))

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last usage report."""
        return self.meter.last_decision


class AsyncMeteredOpenAI(_Passthrough):
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create`` is governed."""

    def __init__(self, client: Any, meter: Meter) -> None:
        super().__init__(client)
        self.meter = meter
        self.chat = _Chat(client.chat, _AsyncCompletions(client.chat.completions, meter))

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last usage report."""
        return self.meter.last_decision


def _is_async(client: Any) -> bool:
    try:
        from openai import AsyncOpenAI
    except ImportError:  # pragma: no cover - duck-typed clients without the package
        pass
    else:
        if isinstance(client, AsyncOpenAI):
            return True
    return inspect.iscoroutinefunction(getattr(client.chat.completions, "create", None))


def wrap_openai(
    client: Any,
    run: Run | AsyncRun | None = None,
    *,
    aos: AOSClient | AsyncAOSClient | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    cost: CostFunction | None = None,
    send_text: bool = True,
    **run_kwargs: Any,
) -> Any:
    """Wraps an ``OpenAI`` or ``AsyncOpenAI`` client so every chat completion
    is checked and metered in ``run`` (or, with ``aos=``, in a run of its own
    started with ``run_kwargs`` such as ``agent_id=``). ``cost(model,
    input_tokens, output_tokens)`` prices calls in USD (default: 0)."""
    if run is None and aos is None:
        raise TypeError("wrap_openai needs run= or aos=")
    meter = Meter(
        run=run,
        aos=aos,
        run_kwargs=dict(run_kwargs),
        default_max_tokens=default_max_tokens,
        cost=cost,
        send_text=send_text,
    )
    if _is_async(client):
        return AsyncMeteredOpenAI(client, meter)
    return MeteredOpenAI(client, meter)
