"""The examples in ``sdk/python/examples/`` run as a user would run them
(a subprocess, the agent's address in ``AOS_AGENT_URL``) against the real
dev-mode agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import SDK, free_port
from openai_server import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, openai_server

EXAMPLES = SDK / "examples"


def run_example(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(SDK),
    )


def test_the_quickstart_runs_until_the_token_budget_stops_it(agent_url: str) -> None:
    done = run_example("quickstart.py", AOS_AGENT_URL=agent_url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "edge agent for tenant 'demo'" in out, out
    assert "simulated 60k-token step: STOP by policy pol-run-tokens" in out, out
    assert re.search(r"read 2 docs from kp-public-docs: doc-1, doc-2 \(evidence ev-\w+\)", out), out
    stop = r"step 5: STOP by policy pol-run-tokens v\d+: TOKENS per run breach, value 60000 vs limit 50000"
    assert re.search(stop, out), out
    assert [line.split(": ")[1] for line in out.splitlines() if re.match(r"step [1-4]: ", line)] == [
        "CONTINUE",
        "CONTINUE",
        "WARN",
        "WARN",
    ], out
    assert re.search(r"failed_policy \(BUDGET_EXCEEDED\), 48000 tokens in 4 steps", out), out
    logged = r"\[aos_sdk\] AOS policy warning \(run run-\w+, pre-step\): WARN by policy pol-run-tokens"
    assert re.search(logged, out), "the WARN steps were logged: " + out


def test_the_quickstart_says_how_to_start_a_missing_agent() -> None:
    done = run_example("quickstart.py", AOS_AGENT_URL=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cargo run -p aos-control-plane -- dev" in done.stderr, done.stderr


def test_the_openai_example_meters_a_completion(agent_url: str) -> None:
    with openai_server() as llm:
        done = run_example(
            "openai_metered.py",
            AOS_AGENT_URL=agent_url,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test",
            OPENAI_MODEL="gpt-test",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"answer: {REPLY}" in done.stdout, done.stdout
    assert f"succeeded; the agent counted {PROMPT_TOKENS + COMPLETION_TOKENS} tokens in 1 step(s)" in done.stdout
    assert len(llm.requests) == 1
