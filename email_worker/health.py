"""Health, readiness and metrics over HTTP on ``HTTP_PORT``.

``GET /health`` answers ``{"status": "ok"}`` while the process serves (liveness);
``GET /readyz`` answers 200 only while every readiness check passes, else 503 with the failing
checks named; ``GET /metrics`` is the Prometheus exposition of the default registry.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], dict[str, bool]]


class HealthServer:
    """Serves in a daemon thread; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, host: str, port: int, readiness: ReadinessCheck) -> None:
        self._readiness = readiness
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health endpoints up", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        readiness = self._readiness

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    self._json(200, {"status": "ok"})
                elif path == "/readyz":
                    checks = _safe(readiness)
                    ready = all(checks.values())
                    status = "ready" if ready else "not_ready"
                    self._json(200 if ready else 503, {"status": status, "checks": checks})
                elif path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                else:
                    self._json(404, {"status": "not_found"})

            def _json(self, code: int, body: dict[str, Any]) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: int, payload: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would drown the outcome lines

        return Handler


def _safe(readiness: ReadinessCheck) -> dict[str, bool]:
    try:
        return readiness()
    except Exception:
        log.exception("readiness check failed")
        return {"readiness_check": False}
