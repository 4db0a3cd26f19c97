"""The real AOS system for the tests: ``aos-control-plane dev`` (one node, the
demo tenant with the example policies, and its edge agent) on free ports in
a temporary directory, started once per session and killed at the end.

Binaries come from ``$AOS_BIN_DIR``, else ``$CARGO_TARGET_DIR/debug``, else
``<repo>/target/debug``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import AOSSystem, binary, free_port, wait_until


def _ready(agent_url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"aos-control-plane dev exited with {process.returncode}: {log_path.read_text()}")
    health = httpx.get(agent_url + "/health", timeout=2).json()
    components = health["components"]
    return bool(
        components["boot_guard"]["validated"]
        and components["snapshot"]["status"] == "ok"
        and components["governance"]["mode"] == "ENFORCING"
    )


@pytest.fixture(scope="session")
def aos_system() -> Iterator[AOSSystem]:
    """The dev-mode system, started once for the session."""
    exe = binary("aos-control-plane")
    root = Path(tempfile.mkdtemp(prefix="aos-sdk-tests-"))
    data_dir = root / "dev"
    log_path = root / "dev.log"
    http, grpc, agent, gateway = (f"127.0.0.1:{free_port()}" for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.setdefault("RUST_LOG", "warn")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(exe),
                "dev",
                "--data-dir",
                str(data_dir),
                "--http-addr",
                http,
                "--grpc-addr",
                grpc,
                "--agent-listen",
                agent,
                "--agent-addr",
                gateway,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    system = AOSSystem(
        agent_url=f"http://{agent}",
        cp_url=f"http://{http}",
        data_dir=data_dir,
        log_path=log_path,
        process=process,
    )
    try:
        wait_until(
            "the dev agent's validated snapshot",
            lambda: _ready(system.agent_url, process, log_path),
            timeout=90,
        )
        yield system
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def agent_url(aos_system: AOSSystem) -> str:
    """The edge agent's URL (governance ENFORCING when the test starts)."""
    if aos_system.governance_mode() != "ENFORCING":
        aos_system.set_governance("enable", "reset by the test fixture")
    return aos_system.agent_url
