"""A fake OpenAI-compatible chat-completions API, served over HTTP on loopback.

It answers ``POST /v1/chat/completions`` as OpenAI, vLLM and Ollama do, and records every
request as it arrived on the wire (headers and raw body), so a test can check what left
testlens: the model asked for, the key, and that no secret was sent. Tests set what it
answers (``reply``), how many requests fail first (``failures``, with ``status``) and how
long it takes (``delay``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from builders import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """Everything the model was sent, as one string (system and user messages)."""
        return "\n".join(message["content"] for message in self.json["messages"])


class FakeLLM:
    def __init__(self, reply: str = "The test waits on a network call that times out.") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.reply: str | None = reply
        self.answered_model: str | None = None  # default: the model asked for
        self.failures = 0  # the first requests answered with `status`
        self.status = 503
        self.delay = 0.0
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client gave up on a slow answer: expected in timeout tests

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        with self._lock:
            self.requests.append(
                Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
            )
            failing = len(self.requests) <= self.failures
        time.sleep(self.delay)
        if request.path != "/v1/chat/completions":
            return self._answer(request, 404, {"error": {"message": "not found"}})
        if failing:  # asking, as servers do, for a wait no analysis should sit through
            error = {"error": {"message": "overloaded"}}
            return self._answer(request, self.status, error, {"Retry-After": "60"})
        asked = json.loads(body)
        message = {"role": "assistant", "content": self.reply}
        self._answer(
            request,
            200,
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.answered_model or asked["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        try:
            request.send_response(status)
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left
