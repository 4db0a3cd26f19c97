"""Five-minute tour of the AOS Python SDK against a running edge agent.

Start the dev system first (from the repository root)::

    cargo run -p aos-control-plane -- dev

then run ``python sdk/python/examples/quickstart.py`` (the agent's address
comes from ``AOS_AGENT_URL``, default ``http://127.0.0.1:8000``).

It asks the agent what it enforces, simulates a step, then runs a governed
run that reads the demo knowledge plane through the agent (a templated SQL
query, evidenced) and whose 12k-token steps grow until the demo tenant's
per-run token budget (pol-run-tokens: 50k tokens) stops it.
"""

from __future__ import annotations

import logging
import sys
import warnings

from aos_sdk import AgentUnavailable, AOSClient, AOSPolicyWarning, GovernanceError, PolicyStopped


def main() -> int:
    # WARN outcomes are Python warnings (and `aos_sdk` log records); show them briefly.
    warnings.simplefilter("ignore", AOSPolicyWarning)
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s", stream=sys.stdout)

    client = AOSClient()
    try:
        caps = client.get_capabilities()
    except AgentUnavailable as down:
        print(down, file=sys.stderr)
        return 2
    print(
        f"edge agent for tenant {caps['tenant_id']!r}: snapshot v{caps['snapshot_version']}, "
        f"{caps['policies']} policies, governance {caps['governance']['mode']}"
    )

    sim = client.simulate(goal="summarise a long report", agent_id="research-bot", estimated_tokens=60_000)
    print(f"simulated 60k-token step: {sim.summary()}")

    step_no = 0
    try:
        with client.run(agent_id="research-bot", goal="summarise the quarterly report") as run:
            print(f"run {run.id} started")
            # Governed data access: a template on a knowledge plane, never raw SQL.
            billing = {"template_id": "docs-by-topic", "params": {"topic": "billing"}}
            docs = run.access("kp-public-docs", "query", billing)
            ids = ", ".join(docs.doc_ids)
            print(f"read {docs.rows} docs from {docs.plane_id}: {ids} (evidence {docs.evidence_id})")
            for step_no in range(1, 10):
                step = run.check_step(estimated_tokens=12_000, model="gpt-4o-mini")
                print(f"step {step_no}: {step.outcome}")
                # ... call the model here, then report what it used:
                run.report_usage(input_tokens=9_000, output_tokens=3_000, response="(the model's answer)")
    except PolicyStopped as stop:
        print(f"step {step_no}: {stop.reasons[0]}")
    except GovernanceError as refused:  # the tenant is HALTED or DEGRADED
        print(f"refused: {refused}")
        return 3

    view = client.get_run(run.id)
    print(
        f"run {view['run_id']}: {view['status']} ({view['termination_reason']}), "
        f"{view['usage']['tokens']} tokens in {view['steps']} steps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
