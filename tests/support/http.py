"""A real, programmable HTTP server for tests: template service, user service, gateway callbacks.

Each route answers from a queue of scripted responses (the last one repeats), each a ``Reply``
or a ``Responder`` (a function of the request), and every request is recorded. Runs a
``ThreadingHTTPServer`` on a free loopback port in a daemon thread.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts, slow gateways)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# A route may answer from the request itself (a gateway's status endpoint that validates what
# it receives): a function of the ``Seen`` request that returns the ``Reply``.
Responder = Callable[[Seen], Reply]


class FakeHttpServer:
    """``route(method, path, *replies)`` scripts a route; unknown routes answer 404. ``port``
    0 picks a free one; a fixed port lets a test bring an endpoint "back" where it was."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[tuple[str, str], list[Reply | Responder]] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, path: str, *replies: Reply | Responder) -> None:
        with self._lock:
            self.routes[(method.upper(), path)] = list(replies) or [Reply()]

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def start(self) -> FakeHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self, method: str, path: str) -> Reply | Responder:
        with self._lock:
            replies = self.routes.get((method, path.split("?", 1)[0]))
            if replies is None:
                replies = self.routes.get((method, path))
            if not replies:
                return Reply(404, {"success": False, "error": "not found"})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                with owner._lock:
                    owner.requests.append(seen)
                reply = owner._next_reply(self.command, self.path)
                if not isinstance(reply, Reply):
                    reply = reply(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


@pytest.fixture
def http_server() -> Iterator[FakeHttpServer]:
    server = FakeHttpServer().start()
    try:
        yield server
    finally:
        server.stop()


class KeepAliveGateway(ThreadingHTTPServer):
    """A gateway's callback endpoint over HTTP/1.1 keep-alive (optionally TLS) that counts TCP
    connections and records each POST body. By path: ``/broken`` answers 500, ``/busy`` 429,
    ``/moved`` a 302, ``/huge`` 64 MiB, ``/close`` answers then drops the connection without
    saying so (an idle timeout on the server's side); anything else answers 200."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                gateway.connections += 1
                super().setup()

            def do_POST(self) -> None:
                gateway.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                code = {"/broken": 500, "/busy": 429, "/moved": 302}.get(self.path, 200)
                size = 64 * 1024 * 1024 if self.path == "/huge" else 2
                self.send_response(code)
                self.send_header("Retry-After", "7")
                if code == 302:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client stops reading /huge
                    for _ in range(0, size, 1 << 20):
                        self.wfile.write(b"x" * min(size, 1 << 20))
                if self.path == "/close":
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
