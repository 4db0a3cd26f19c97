"""Connection settings and the per-attempt logic both clients share.

:class:`Settings` owns the base URL, headers (``Authorization``,
``Idempotency-Key``), timeouts and the retry policy; :meth:`Settings.retry_delay`
decides, for one answer, whether to retry. The sync and async clients only
add the loop that sends, sleeps and repeats (``time.sleep`` vs
``asyncio.sleep``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import decode
from .protocol import Call
from .retry import RetryPolicy

#: The dev-mode agent's address.
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Seconds for one attempt of a call (connect, read, write, pool).
DEFAULT_TIMEOUT = 10.0
#: Retries of a transient failure after the first attempt.
DEFAULT_MAX_RETRIES = 2

USER_AGENT = "aos-sdk-python/0.1.0"


@dataclass(frozen=True)
class Settings:
    """Where and how to reach the agent."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        max_retries: int,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> Settings:
        """Resolves arguments, then ``AOS_AGENT_URL`` / ``AOS_API_KEY``, then defaults."""
        url = (base_url or os.environ.get("AOS_AGENT_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        return cls(
            base_url=url,
            api_key=api_key if api_key is not None else os.environ.get("AOS_API_KEY") or None,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=retry if retry is not None else RetryPolicy(max_retries=max_retries),
            extra_headers=dict(headers or {}),
        )

    def default_headers(self) -> dict[str, str]:
        """Headers on every request."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **self.extra_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request_args(self, call: Call) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request`` / ``AsyncClient.request``."""
        args: dict[str, Any] = {"method": call.method, "url": call.path}
        if call.json is not None:
            args["json"] = call.json
        if call.params:
            args["params"] = dict(call.params)
        if call.idempotency_key is not None:
            args["headers"] = {"Idempotency-Key": call.idempotency_key}
        if call.timeout is not None:
            args["timeout"] = httpx.Timeout(call.timeout, connect=self.timeout.connect)
        return args

    def url(self, call: Call) -> str:
        """The full URL of a call, for messages."""
        return self.base_url + call.path

    def retry_delay(self, call: Call, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying after this answer; ``None`` when it is final."""
        status = response.status_code
        if not call.retry or status in call.final_statuses or (status < 500 and status != 409):
            return None
        code, _ = decode.error_code(decode.parse_json(response.content))
        return self.retry.after_status(attempt, status, code, response.headers)

    def transport_retry_delay(self, call: Call, attempt: int) -> float | None:
        """Seconds to wait before retrying a call that got no answer."""
        return self.retry.after_transport_error(attempt) if call.retry else None

    def answer(self, call: Call, response: httpx.Response) -> Any:
        """The answer's JSON, or the typed error."""
        return decode.answer_or_error(response.status_code, response.content, call, self.url(call))

    def no_answer(self, call: Call, exc: BaseException, attempts: int) -> Exception:
        """The error for a call that got no answer."""
        return decode.unavailable(exc, self.base_url, attempts)
