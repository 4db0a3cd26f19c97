"""Helpers shared by the tests: locating the binaries, free ports, waiting
for a condition with a deadline, the running system's handles
(:class:`AOSSystem`), and a recorder of the requests an SDK client sends."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from aos_sdk import AOSClient

REPO = Path(__file__).resolve().parents[3]
SDK = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def bin_dir() -> Path:
    """Where the cargo-built binaries are."""
    if os.environ.get("AOS_BIN_DIR"):
        return Path(os.environ["AOS_BIN_DIR"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug"
    return REPO / "target" / "debug"


def binary(name: str) -> Path:
    """A built binary, or a clear failure saying how to get it."""
    path = bin_dir() / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: build it with `cargo build -p aos-control-plane` "
            "(or point AOS_BIN_DIR / CARGO_TARGET_DIR at the cargo target directory)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Errors a condition may raise while the system is still getting there.
TRANSIENT = (httpx.HTTPError, KeyError, ValueError, TypeError)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05) -> T:
    """Polls ``check`` until it returns a value other than ``None``/``False``;
    fails naming ``what`` after ``timeout`` seconds. Errors in ``TRANSIENT``
    count as "not yet"; any other error fails at once."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except TRANSIENT as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error!r})")
        time.sleep(every)


@dataclass
class AOSSystem:
    """A running dev-mode system."""

    agent_url: str
    cp_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def admin_key(self) -> str:
        """The demo tenant's admin key (dev mode writes it on first start)."""
        return (self.data_dir / "demo-admin.key").read_text().strip()

    def cp(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A control-plane REST call with the demo admin key."""
        return httpx.request(
            method,
            self.cp_url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=15,
        )

    def agent_health(self) -> dict[str, Any]:
        """The agent's /health, fetched without the SDK."""
        return dict(httpx.get(self.agent_url + "/health", timeout=5).json())

    def governance_mode(self) -> str:
        """The governance mode the agent enforces now."""
        return str(self.agent_health()["components"]["governance"]["mode"])

    def set_governance(self, action: str, reason: str) -> None:
        """``POST /api/v1/ops/governance/{action}`` for the demo tenant, then
        waits until the agent applied it."""
        expected = {"enable": "ENFORCING", "degrade": "DEGRADED", "disable": "DISABLED", "halt": "HALTED"}[action]
        answer = self.cp("POST", f"/api/v1/ops/governance/{action}", {"reason": reason, "tenant": "demo"})
        assert answer.status_code == 200, answer.text
        wait_until(
            f"governance {expected} at the agent",
            lambda: self.governance_mode() == expected,
        )

    def records(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        """Records of a run the control plane has received from the agent."""
        answer = self.cp("GET", f"/api/v1/tenants/demo/records?run_id={run_id}&kind={kind}")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["records"])

    def log_tail(self, lines: int = 40) -> str:
        """The end of the system's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


AGENT = "research-bot"
"""The workload agent id the tests run as (no demo policy scopes it specially)."""


#: What the token-budget scenario (12k-token steps until pol-run-tokens stops
#: the run) gives, with the sync and the async client alike.
EXPECTED_TOKEN_BUDGET = {
    # 12k, 24k: CONTINUE; 36k (72 %), 48k (96 %): WARN at the check and at the report.
    "steps": [("CONTINUE", 0), ("CONTINUE", 0), ("WARN", 2), ("WARN", 2)],
    "policy_id": "pol-run-tokens",
    "outcome": "STOP",
    "breach": ("TOKENS", 60_000, 50_000, "PER_RUN"),
    "reasons_name_policy": True,
    "local_status": "failed_policy",
    "status": "failed_policy",
    "termination_reason": "BUDGET_EXCEEDED",
    "tokens": 48_000,
    "admitted_steps": 4,
}


class Recorder:
    """Records the requests an SDK client sends (an httpx event hook)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append((request.method, request.url.path, dict(request.headers), request.content))

    def paths(self, method: str = "POST") -> list[str]:
        """Paths of the requests sent with ``method``."""
        return [path for m, path, _, _ in self.sent if m == method]

    @property
    def bodies(self) -> list[tuple[str, str, bytes]]:
        """``(method, path, body)`` of every request."""
        return [(m, path, body) for m, path, _, body in self.sent]


def recording_client(agent_url: str) -> tuple[AOSClient, Recorder]:
    """An SDK client whose requests are recorded."""
    recorder = Recorder()
    http = httpx.Client(event_hooks={"request": [recorder]})
    return AOSClient(base_url=agent_url, http_client=http), recorder
