"""Health, readiness, metrics and the status API over HTTP on ``HTTP_PORT``.

``GET /health`` answers ``{"status": "ok"}`` while the process serves (liveness);
``GET /readyz`` answers 200 only while every gating check passes, else 503 with the failing
checks named, and reports non-gating facts (breaker states) beside them; ``GET /metrics`` is the
Prometheus exposition of the worker's registries; ``/api/`` paths go to the status API when one
is mounted. Probes and scrapes are never authenticated; the status API checks its own token
(and is off, 404, when none is configured and it is not opened explicitly).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """``checks`` gate readiness (all must be true); ``info`` (breaker states) and ``paused``
    (the cause of a pause in force, and what it means) are reported only."""

    checks: dict[str, bool]
    info: dict[str, str] = field(default_factory=dict)
    paused: dict[str, str] | None = None

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


ReadinessCheck = Callable[[], Readiness]
# (path with query string, Authorization header) -> (status, JSON body, extra headers)
ApiHandler = Callable[[str, str | None], tuple[int, dict[str, Any], dict[str, str]]]


class TcpProbe:
    """Whether ``host:port`` accepts a TCP connection, checked at most once per ``interval``
    seconds however often it is asked (readiness probes must not hammer the relay)."""

    def __init__(self, host: str, port: int, *, interval: float, timeout: float = 2.0) -> None:
        self._address = (host, port)
        self._interval, self._timeout = interval, timeout
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._ok = False

    def reachable(self) -> bool:
        """The cached answer, refreshed when older than the interval. Never raises."""
        with self._lock:
            if time.monotonic() - self._checked_at >= self._interval:
                self._ok = self._connect()
                self._checked_at = time.monotonic()
            return self._ok

    def _connect(self) -> bool:
        try:
            with socket.create_connection(self._address, timeout=self._timeout):
                return True
        except OSError as exc:
            log.warning("SMTP relay unreachable", extra={"error": type(exc).__name__})
            return False


class HealthServer:
    """Serves in a daemon thread; ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        host: str,
        port: int,
        readiness: ReadinessCheck,
        *,
        registries: Sequence[CollectorRegistry] = (REGISTRY,),
        api: ApiHandler | None = None,
    ) -> None:
        self._readiness = readiness
        self._registries = tuple(registries)
        self._api = api
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
        if self._thread.is_alive():  # shutdown() waits forever for a loop that never ran
            self._server.shutdown()
        self._server.server_close()

    def metrics(self) -> bytes:
        """The exposition of every registry, concatenated (their metric names are disjoint)."""
        return b"".join(generate_latest(registry) for registry in self._registries)

    def ready_answer(self) -> tuple[int, dict[str, Any]]:
        state = _safe(self._readiness)
        body: dict[str, Any] = {
            "status": "ready" if state.ready else "not_ready",
            "checks": state.checks,
        }
        if state.info:
            body["breakers"] = state.info
        if state.paused is not None:
            body["paused"] = state.paused
        return (200 if state.ready else 503), body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    self._json(200, {"status": "ok"})
                elif path == "/readyz":
                    self._json(*owner.ready_answer())
                elif path == "/metrics":
                    self._send(200, owner.metrics(), CONTENT_TYPE_LATEST)
                elif path.startswith("/api/") and owner._api is not None:
                    code, body, headers = owner._api(self.path, self.headers.get("Authorization"))
                    self._json(code, body, headers)
                else:
                    self._json(404, {"status": "not_found"})

            def _json(
                self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                payload = json.dumps(body).encode()
                self._send(code, payload, "application/json", headers or {})

            def _send(
                self,
                code: int,
                payload: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would drown the outcome lines

        return Handler


def _safe(readiness: ReadinessCheck) -> Readiness:
    try:
        return readiness()
    except Exception:
        log.exception("readiness check failed")
        return Readiness({"readiness_check": False})
