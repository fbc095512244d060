"""Embedded stand-ins for the demo: an SMTP sink and one HTTP server that plays the template
service, the user service and the gateway's callback endpoint. Loopback only, free ports.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

TEMPLATES: dict[str, dict[str, Any]] = {
    "welcome": {
        "subject": "Welcome, {{ name }}!",
        "html_body": (
            "<h1>Hello {{ name }}</h1><p>Start here: <a href='{{ link }}'>{{ link }}</a></p>"
        ),
        "version": "3",
    },
    "password_reset": {
        "subject": "Reset your password",
        "html": "<p>Hi {{ name }}, reset it <a href='{{ link }}'>here</a>.</p>",
        "text": "Hi {{ name }}, reset it here: {{ link }}",
        "version": "1",
    },
}
USERS: dict[str, dict[str, Any]] = {
    "7f9c1a52-0001-4c1e-9a57-2f0b3c1d0001": {
        "email": "grace@example.com",
        "name": "Grace",
        "preferences": {"email": True},
    },
    "7f9c1a52-0002-4c1e-9a57-2f0b3c1d0002": {
        "email": "linus@example.com",
        "name": "Linus",
        "preferences": {"email": False},
    },
}


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._sink.lock:
            if address in self._sink.flaky and address not in self._sink.deferred:
                self._sink.deferred.add(address)
                return "451 4.3.0 Try again later"
        if address.startswith("bounce"):
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._sink.lock:
            content = envelope.content or b""
            self._sink.received.append(content if isinstance(content, bytes) else content.encode())
        return "250 2.0.0 Ok: queued"


@dataclass
class SmtpSink:
    """Accepts everything, except: ``bounce*`` addresses get 550, ``flaky`` ones 451 once."""

    flaky: set[str] = field(default_factory=set)
    received: list[bytes] = field(default_factory=list)
    deferred: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def start(self) -> SmtpSink:
        with socket.socket() as probe:  # aiosmtpd's readiness probe cannot use port 0
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class DemoHttp:
    """Template service, user service and callback receiver on one loopback port."""

    def __init__(self) -> None:
        self.callbacks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DemoHttp:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str) -> tuple[int, dict[str, Any]]:
        kind, _, key = path.split("?", 1)[0].removeprefix("/api/v1/").partition("/")
        table = TEMPLATES if kind == "templates" else USERS if kind == "users" else {}
        if key in table:
            return 200, {"success": True, "data": table[key], "message": "ok"}
        return 404, {"success": False, "error": "not found", "message": "not found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(*owner._answer(self.path))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.callbacks.append(json.loads(body))
                self._reply(200, {"success": True})

            def _reply(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
