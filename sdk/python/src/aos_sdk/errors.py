"""The SDK's exceptions and warnings: what a caller catches.

This module only defines the classes; which answer becomes which exception
is decided in :mod:`aos_sdk.decode`.

::

    AOSError                      everything the SDK raises
    ├── PolicyError               a policy decided against the step (carries the Decision)
    │   ├── PolicyStopped         STOP: the run ended in this step
    │   ├── PolicyKilled          KILL: the run ended, in-flight work cancelled
    │   └── RunPaused             PAUSE: resume with .resume(ack=...)
    ├── GovernanceError           the tenant's governance state refused the work
    │   ├── GovernanceDegraded    DEGRADED: new runs refused
    │   └── GovernanceHalted      HALTED: new runs refused, running runs killed
    ├── AgentUnavailable          no answer from the agent (not running, unreachable, timed out)
    ├── AgentError                any other error answer (status, code)
    │   ├── InvalidRequest        400: the agent's message names the field
    │   │   └── InvalidParams     400 INVALID_PARAMS: a data access's parameters (also an AccessError)
    │   ├── AccessError           a governed data access returned no data (evidence_id, run_status, decision)
    │   │   ├── AccessDenied      403: the plane gate or a policy refused it
    │   │   │   ├── AccessStopped STOP (also a PolicyStopped): the run ended
    │   │   │   ├── AccessKilled  KILL (also a PolicyKilled): the run ended, its cancel signal fired
    │   │   │   └── AccessPaused  PAUSE (also a RunPaused): resume with .resume(ack=...)
    │   │   └── AccessFailed      502/504: the source failed it (never retried by the SDK)
    │   ├── RunNotFound           404: unknown run
    │   ├── StepNotFound          404: no open step with that id
    │   ├── RunConflict           409: the run's state does not allow this
    │   │   └── RunEnded          409 RUN_ENDED
    │   └── ServiceUnavailable    503 BOOT_GUARD, OUTBOX_FULL, STALE_SNAPSHOT (after retries)
    └── AOSTimeout                poll_run gave up waiting

WARN outcomes are not exceptions: they are :class:`AOSPolicyWarning` through
:mod:`warnings` (and a record on the ``aos_sdk`` logger).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .results import Decision, Signal


class AOSError(Exception):
    """Base class of every exception raised by the SDK.

    ``status``/``code`` are the HTTP status and the agent's error code when
    the error comes from an error answer; ``body`` is the parsed answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.run_id = run_id

    def __str__(self) -> str:
        return self.message


class PolicyError(AOSError):
    """A policy decided against the step. ``decision`` is what the agent
    decided (``None`` only when the agent answered 409 RUN_PAUSED for a
    pause this client did not see)."""

    def __init__(
        self,
        message: str,
        *,
        decision: Decision | None = None,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            code=code,
            body=body if body is not None else (dict(decision.raw) if decision else None),
            run_id=run_id,
        )
        self.decision = decision

    @property
    def outcome(self) -> str | None:
        """``PAUSE``, ``STOP`` or ``KILL``."""
        return self.decision.outcome if self.decision else None

    @property
    def policy_id(self) -> str | None:
        """The policy credited with the outcome."""
        return self.decision.policy_id if self.decision else None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Human-readable reasons, one per policy that acted."""
        return self.decision.reasons if self.decision else ()

    @property
    def signals(self) -> tuple[Signal, ...]:
        """The signals (limit, value, threshold) behind the decision."""
        return self.decision.signals if self.decision else ()

    @property
    def step_id(self) -> str | None:
        """The step that was refused."""
        return self.decision.step_id if self.decision else None

    @property
    def raw(self) -> Any:
        """The agent's whole answer."""
        return self.body


class PolicyStopped(PolicyError):
    """STOP: the run ended in the step that breached; no further step is admitted."""


class PolicyKilled(PolicyError):
    """KILL: the run ended at once and its cancel signal fired."""


class RunPaused(PolicyError):
    """PAUSE: the run waits for :meth:`resume` (with ``ack`` naming who
    acknowledges it when :attr:`requires_ack`)."""

    def __init__(
        self,
        message: str,
        *,
        resume: Callable[..., Any] | None = None,
        decision: Decision | None = None,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, decision=decision, status=status, code=code, body=body, run_id=run_id)
        self._resume = resume

    @property
    def requires_ack(self) -> bool:
        """Whether :meth:`resume` needs ``ack`` (who acknowledges the pause)."""
        return bool(self.decision and self.decision.requires_ack)

    def resume(self, ack: str | None = None) -> Any:
        """Resumes the run (returns the run view; awaitable with the async client)."""
        if self._resume is None:
            raise AOSError("this RunPaused was not raised by a run handle: resume the run with run.resume()")
        return self._resume(ack=ack)


class GovernanceError(AOSError):
    """The tenant's governance state refused the work (the message carries
    the reason and who set it)."""


class GovernanceDegraded(GovernanceError):
    """Governance is DEGRADED: new runs are refused until it is ENFORCING again."""


class GovernanceHalted(GovernanceError):
    """Governance is HALTED: new runs are refused and running runs were killed."""


class AgentUnavailable(AOSError):
    """No answer from the edge agent: not running, unreachable, or too slow
    (after the configured retries)."""

    def __init__(self, message: str, *, url: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.cause = cause


class AgentError(AOSError):
    """An error answer from the agent, with its HTTP ``status`` and ``code``."""


class InvalidRequest(AgentError):
    """400: the request was refused; the message names the field."""


class AccessError(AgentError):
    """A governed data access (``POST /api/v1/access``) that returned no
    data. The agent wrote an evidence record for it either way:
    ``evidence_id`` names it. ``run_status`` is the run's status after the
    attempt; ``decision`` is the policy decision when one was taken (``None``
    when the plane gate refused first); ``plane``/``action`` what was asked."""

    decision: Decision | None

    def __init__(
        self,
        message: str,
        *,
        evidence_id: str | None = None,
        run_status: str | None = None,
        decision: Decision | None = None,
        plane: str | None = None,
        action: str | None = None,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        run_id: str | None = None,
    ) -> None:
        # Cooperative: for AccessStopped & co. the next class in the MRO is
        # PolicyStopped/PolicyKilled/RunPaused (whose PolicyError.__init__
        # takes the decision); for the others it is AOSError.
        super().__init__(message, status=status, code=code, body=body, run_id=run_id)
        self.decision = decision
        self.evidence_id = evidence_id
        self.run_status = run_status
        self.plane = plane
        self.action = action

    @property
    def outcome(self) -> str | None:
        """The decision's outcome (``None`` when no policy decided)."""
        return self.decision.outcome if self.decision else None

    @property
    def policy_id(self) -> str | None:
        """The policy credited with the decision."""
        return self.decision.policy_id if self.decision else None

    @property
    def reasons(self) -> tuple[str, ...]:
        """The decision's reasons, one per policy that acted."""
        return self.decision.reasons if self.decision else ()


class AccessDenied(AccessError):
    """403: the access was refused before it ran. ``code`` says why:

    - the plane gate: ``UNKNOWN_PLANE``, ``PLANE_INACTIVE``, ``PLANE_DENIED``
      (deny by default, no policy allows this run), ``UNKNOWN_TARGET`` (no
      source on the plane has the template, endpoint or tool),
      ``SOURCE_NOT_ENABLED``; the run goes on;
    - ``POLICY_DENIED``: a policy decided STOP, KILL or PAUSE (raised as
      :class:`AccessStopped`, :class:`AccessKilled`, :class:`AccessPaused`),
      with ``decision``, ``policy_id`` and ``reasons``.
    """


class AccessStopped(AccessDenied, PolicyStopped):
    """``POLICY_DENIED`` with STOP: the run ended with this access (``run_status``
    ``failed_policy``). Also a :class:`PolicyStopped`, like a stopped step."""


class AccessKilled(AccessDenied, PolicyKilled):
    """``POLICY_DENIED`` with KILL: the run ended at once and its cancel signal
    fired. Also a :class:`PolicyKilled`, like a killed step."""


class AccessPaused(AccessDenied, RunPaused):
    """``POLICY_DENIED`` with PAUSE: the run waits for :meth:`resume`. Also a
    :class:`RunPaused`. (The access answer does not say whether the pause
    needs an acknowledgement: the run's view does.)"""

    def __init__(self, message: str, *, resume: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self._resume = resume


class AccessFailed(AccessError):
    """502/504: the access was admitted but its source failed it —
    ``REDIRECT_REFUSED``, ``RESPONSE_TOO_LARGE``, ``UPSTREAM_STATUS``,
    ``UPSTREAM_FAILED``, ``CREDENTIAL_UNAVAILABLE``, ``UNSUPPORTED_SOURCE``,
    ``SOURCE_MISCONFIGURED``, ``READ_ONLY_VIOLATION`` (502) or ``TIMEOUT``
    (504). The access may have had effects at the source, so the SDK never
    retries it; ``decision`` is the decision that admitted it."""


class InvalidParams(InvalidRequest, AccessError):
    """400 ``INVALID_PARAMS``: a data access's parameters do not match what
    the template or endpoint declares (missing, undeclared, wrong type).
    Nothing ran; the attempt is evidenced (``evidence_id``)."""


class RunNotFound(AgentError):
    """404: the agent does not know this run."""


class StepNotFound(AgentError):
    """404: the run has no open step with this id (unknown, refused, or already reported)."""


class RunConflict(AgentError):
    """409: the run's state does not allow this (e.g. resuming a run that is not paused)."""


class RunEnded(RunConflict):
    """409 RUN_ENDED: the run has ended and takes no further step. ``run``
    holds the run view when the SDK fetched it."""

    def __init__(self, message: str, *, run: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.run = run


class ServiceUnavailable(AgentError):
    """503 for a reason other than governance: no verified snapshot yet
    (``BOOT_GUARD``), a stale fail-closed snapshot (``STALE_SNAPSHOT``), or a
    full outbox (``OUTBOX_FULL``). Raised once the retries are used up."""


class AOSTimeout(AOSError):
    """A wait (``poll_run``) ran out of time; ``run`` is the last view seen."""

    def __init__(self, message: str, *, run: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.run = run


class AOSPolicyWarning(UserWarning):
    """A WARN outcome (or a decision governance changed): the step proceeds.

    ``decision`` holds the whole decision.
    """

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class AOSGovernanceWarning(AOSPolicyWarning):
    """Governance state (DEGRADED, DISABLED) downgraded or bypassed what the
    policies decided; ``decision.decided_outcome`` is what they decided."""
