"""When to retry a call and how long to wait: shared by both clients, no I/O.

Transient failures are retried with exponential backoff and jitter, at most
``max_retries`` times:

- transport errors (connection refused or reset, timeouts);
- 502 and 504;
- 503, except the governance refusals (``GOVERNANCE_HALTED``,
  ``GOVERNANCE_DEGRADED``), which are decisions, not outages;
- 409 ``REQUEST_IN_PROGRESS``: the agent is still running the first attempt
  of this ``Idempotency-Key`` (a retry after a lost answer); asking again
  later gets that attempt's answer.

A ``Retry-After`` (seconds) is honoured, capped at ``retry_after_max``.
A call may make some of these statuses final (:attr:`aos_sdk.protocol.Call.final_statuses`:
a data access's 502/504, after which the access may have had effects).

Every retry of a POST carries the same ``Idempotency-Key`` (see
:class:`aos_sdk.protocol.Call`), so the agent can answer a repeat with
its first answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

#: 503 codes that are decisions, never retried.
FINAL_503_CODES: frozenset[str] = frozenset({"GOVERNANCE_HALTED", "GOVERNANCE_DEGRADED"})

#: Statuses that may succeed when repeated.
RETRYABLE_STATUSES: frozenset[int] = frozenset({502, 503, 504})

#: The agent's 409 for a repeat of an ``Idempotency-Key`` whose first
#: request is still running: retried (the answer comes once it is done).
IN_PROGRESS_CODE = "REQUEST_IN_PROGRESS"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures."""

    max_retries: int = 2
    """Retries after the first attempt (0: never retry)."""
    backoff_base: float = 0.2
    """Seconds before the first retry; doubles each time."""
    backoff_max: float = 5.0
    """Cap on one backoff wait."""
    retry_after_max: float = 30.0
    """Cap on a server's ``Retry-After``."""

    def backoff(self, attempt: int) -> float:
        """Wait before retry number ``attempt + 1``: base·2^attempt, capped,
        with ±25 % jitter so many clients do not retry in step."""
        delay = min(self.backoff_max, self.backoff_base * float(2**attempt))
        return max(0.0, delay * random.uniform(0.75, 1.25))

    def after_transport_error(self, attempt: int) -> float | None:
        """Seconds to wait before retrying a call that got no answer, or
        ``None`` when the retries are used up."""
        if attempt >= self.max_retries:
            return None
        return self.backoff(attempt)

    def after_status(self, attempt: int, status: int, code: str | None, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait before retrying an error answer, or ``None`` when
        it is final (not transient, or the retries are used up)."""
        in_progress = status == 409 and code == IN_PROGRESS_CODE
        if (status not in RETRYABLE_STATUSES and not in_progress) or attempt >= self.max_retries:
            return None
        if status == 503 and code in FINAL_503_CODES:
            return None
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        return self.backoff(attempt)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is not used by the agent
    and is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
