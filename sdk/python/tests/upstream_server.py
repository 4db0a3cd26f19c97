"""A local HTTP upstream for the data-access tests: the service behind an
HTTP data source that the edge agent calls for ``fetch`` accesses.

  GET /            200 "ok" (the control plane's verification probe)
  GET /items/<x>   JSON ``{"id": <raw segment>, "path": <raw path>}``
  GET /redirect    302 to a loopback port nobody serves (the agent must not follow it)

It records every path it received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import free_port


@dataclass
class Upstream:
    """A running upstream: its base URL and the paths it received."""

    base_url: str
    paths: list[str] = field(default_factory=list)


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    """Serves on a free loopback port until the block ends."""
    received: list[str] = []
    nowhere = f"http://127.0.0.1:{free_port()}/stolen"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            received.append(self.path)
            if self.path == "/":
                self._send(200, b"ok", "text/plain")
            elif self.path.startswith("/items/"):
                segment = self.path[len("/items/") :].split("?")[0]
                self._send(200, json.dumps({"id": segment, "path": self.path}).encode(), "application/json")
            elif self.path == "/redirect":
                self._send(302, b"", "text/plain", {"Location": nowhere})
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Upstream(base_url=f"http://127.0.0.1:{server.server_address[1]}", paths=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
