"""The HTTP side of the benchmark: one threaded HTTP/1.1 server (keep-alive) that plays the
template service (``GET /api/v1/templates/<code>``) and the gateway's callback endpoint
(``POST /api/v1/email/status/``), recording each callback's arrival time. It answers from
memory and does no other work, so what it costs is the HTTP parsing the worker needs anyway."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEMPLATE_CODE = "welcome"
CALLBACK_PATH = "/api/v1/email/status/"
TEMPLATE: dict[str, Any] = {
    "subject": "Welcome to Example, {{ name }}",
    "html_body": (
        "<html><body><h1>Hello {{ name }}</h1>"
        "<p>Thanks for signing up. Please confirm your address by following the link below; "
        "it stays valid for 24 hours.</p>"
        '<p><a href="{{ link }}">Confirm my address</a></p>'
        "<p>If you did not sign up, you can ignore this message: nothing happens until the "
        "address is confirmed.</p><p>The Example team</p></body></html>"
    ),
    "version": "1",
}


@dataclass
class CallbackLog:
    """Callbacks received: (arrival time, notification_id, status). Appends are atomic."""

    arrivals: list[tuple[float, str, str]] = field(default_factory=list)

    def delivered(self) -> dict[str, float]:
        """First arrival time of a ``delivered`` callback per notification id."""
        first: dict[str, float] = {}
        for moment, notification_id, status in list(self.arrivals):
            if status == "delivered" and notification_id not in first:
                first[notification_id] = moment
        return first

    def clear(self) -> None:
        self.arrivals.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as they would
    # Headers and body are two writes: with Nagle on, a kept-alive connection holds the body
    # until the client's delayed ACK (40 ms), which would measure this server, not the worker.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?")[0] == f"/api/v1/templates/{TEMPLATE_CODE}":
            self._reply(200, self.server.template_body)
        else:
            self._reply(404, b'{"success": false}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != CALLBACK_PATH:
            self._reply(404, b"{}")
            return
        moment = time.time()
        try:
            event = json.loads(body)
            notification_id, status = str(event["notification_id"]), str(event["status"])
        except (ValueError, KeyError, TypeError):
            self._reply(400, b"{}")
            return
        self.server.callbacks.arrivals.append((moment, notification_id, status))
        self._reply(200, b'{"success": true}')

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request would cost more than the request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.callbacks = CallbackLog()
        self.template_body = json.dumps({"success": True, "data": TEMPLATE}).encode()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop a keep-alive connection (a new httpx client per call does) would
        # print a traceback each; a real failure shows up as a missing callback instead.
        return


class HttpServices:
    """Template service and callback receiver on one loopback port, served from a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def callback_url(self) -> str:
        return self.url + CALLBACK_PATH

    @property
    def callbacks(self) -> CallbackLog:
        return self._server.callbacks

    def start(self) -> HttpServices:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
