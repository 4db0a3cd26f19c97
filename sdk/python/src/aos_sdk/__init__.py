"""AOS Python SDK: governed LLM agent runs through the local AOS edge agent.

::

    from aos_sdk import AOSClient, PolicyStopped

    client = AOSClient()                      # $AOS_AGENT_URL or http://127.0.0.1:8000
    with client.run(agent_id="research-bot", goal="summarise the report") as run:
        run.check_step(estimated_tokens=1200, model="gpt-4o-mini")
        ...                                   # call the model
        run.report_usage(input_tokens=900, output_tokens=300, cost_usd=0.004)
        docs = run.access("kp-public-docs", "query",  # governed data access
                          {"template_id": "docs-by-topic", "params": {"topic": "billing"}})

Modules, one job each: :mod:`~aos_sdk.client` (sync client and run handle),
:mod:`~aos_sdk.aio` (async twins), :mod:`~aos_sdk.protocol` (requests),
:mod:`~aos_sdk.decode` (answers → results, exceptions, warnings),
:mod:`~aos_sdk.results` (decision, grounding and data-access result types), :mod:`~aos_sdk.errors`
(exceptions), :mod:`~aos_sdk.retry` (retry policy), :mod:`~aos_sdk.transport`
(settings shared by both clients), :mod:`~aos_sdk.runstate` (run
bookkeeping), :mod:`~aos_sdk.openai` (OpenAI client wrapper).
"""

from .aio import AsyncAOSClient, AsyncRun
from .client import AOSClient, Run
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
    AOSTimeout,
    GovernanceDegraded,
    GovernanceError,
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
from .results import AccessResult, Decision, Grounding, Signal
from .retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AOSClient",
    "AOSError",
    "AOSGovernanceWarning",
    "AOSPolicyWarning",
    "AOSTimeout",
    "AccessDenied",
    "AccessError",
    "AccessFailed",
    "AccessKilled",
    "AccessPaused",
    "AccessResult",
    "AccessStopped",
    "AgentError",
    "AgentUnavailable",
    "AsyncAOSClient",
    "AsyncRun",
    "Decision",
    "GovernanceDegraded",
    "GovernanceError",
    "GovernanceHalted",
    "Grounding",
    "InvalidParams",
    "InvalidRequest",
    "PolicyError",
    "PolicyKilled",
    "PolicyStopped",
    "RetryPolicy",
    "Run",
    "RunConflict",
    "RunEnded",
    "RunNotFound",
    "RunPaused",
    "ServiceUnavailable",
    "Signal",
    "StepNotFound",
    "__version__",
]
