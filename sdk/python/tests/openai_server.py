"""A local HTTP server that speaks OpenAI's chat-completions format
(``POST /v1/chat/completions``), for the wrapper tests and the example.

It answers every request with a fixed reply and fixed ``usage``, records
what it received, and answers 500 for the model ``fail-model``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Paris is the capital of France."
PROMPT_TOKENS = 321
COMPLETION_TOKENS = 123


@dataclass
class OpenAIServer:
    """A running server: its ``/v1`` base URL and the bodies it received."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def openai_server() -> Iterator[OpenAIServer]:
    """Serves on a free loopback port until the block ends."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            received.append({"path": self.path, "body": body})
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            if body.get("model") == "fail-model":
                self._send(500, {"error": {"message": "the model is down", "type": "server_error"}})
                return
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(received)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "unknown"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": REPLY},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": PROMPT_TOKENS,
                        "completion_tokens": COMPLETION_TOKENS,
                        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                    },
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield OpenAIServer(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", requests=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if __name__ == "__main__":  # serve until interrupted, for trying the example by hand
    with openai_server() as s:
        print(f"OPENAI_BASE_URL={s.base_url}", flush=True)
        threading.Event().wait()
