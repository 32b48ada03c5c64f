"""A loopback HTTP server for the openai: backend's tests.

Requests to a path with a handler get the handler's reply; other requests under `/v1/` get the
next reply of the script; anything else is a 404 (so the backend's probe for a tokenize endpoint
finds none and does not eat the script). Every request is recorded with its arrival time, which
lets a test check how long the client waited between attempts without timing the test itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One HTTP reply: a dict or list body is sent as JSON, a str or bytes body as it is."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    body: Any
    """The JSON body (None when there was none)."""
    time: float
    """time.monotonic() at arrival."""


Handler = Callable[[Any], Reply]


class StubServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering from `script` and `handlers`."""

    def __init__(self, script: Sequence[Reply] = (), handlers: dict[str, Handler] | None = None) -> None:
        self.script = list(script)
        self.handlers = dict(handlers or {})
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                with stub._lock:
                    stub.requests.append(Seen(self.command, path, body, arrived))
                    if path in stub.handlers:
                        reply = None
                    elif path.startswith("/v1/"):
                        reply = stub.script.pop(0) if stub.script else Reply(500, {"error": "script ended"})
                    else:
                        reply = Reply(404, {"error": f"no route {path}"})
                if reply is None:
                    reply = stub.handlers[path](body)
                if isinstance(reply.body, str | bytes):
                    data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    kind = "text/plain"
                else:
                    data = json.dumps(reply.body).encode()
                    kind = "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.root}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, path: str) -> list[Seen]:
        """The requests to `path`, in arrival order."""
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def stub_server(script: Sequence[Reply] = (), handlers: dict[str, Handler] | None = None) -> Iterator[StubServer]:
    server = StubServer(script, handlers)
    try:
        yield server
    finally:
        server.close()


def completion(text: str = "", top: dict[str, float] | None = None, finish: str = "stop") -> dict[str, Any]:
    """A /completions reply body (with one position of top log-probs when `top` is given)."""
    choice: dict[str, Any] = {"text": text, "finish_reason": finish, "index": 0}
    if top is not None:
        choice["logprobs"] = {"top_logprobs": [top]}
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
