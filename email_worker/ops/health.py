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
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """``checks`` gate readiness (all must be true); ``info`` (breaker states) and ``paused``
    (the cause of a pause in force, and what it means) are reported only."""

    checks: dict[str, bool]
    info: dict[str, str] = field(default_factory=dict)
    paused: dict[str, str] | None = None
    # Each relay by name: {"reachable": bool, "breaker": state} (docs/relays.md).
    relays: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


ReadinessCheck = Callable[[], Readiness]
# (path with query string, Authorization header) -> (status, JSON body, extra headers)
ApiHandler = Callable[[str, str | None], tuple[int, dict[str, Any], dict[str, str]]]
# Routes served under a path prefix (``/unsubscribe/``, ``/webhooks/``), unauthenticated here
# (each checks its own credentials): (method, path with query, request headers, body) ->
# (status, payload, content type, extra headers). The body is at most MAX_ROUTE_BODY bytes.
Answer = tuple[int, bytes, str, dict[str, str]]
HttpRoute = Callable[[str, str, Mapping[str, str], bytes], Answer]
MAX_ROUTE_BODY = 1_048_576
_NOT_FOUND: Answer = (404, b'{"status": "not_found"}', "application/json", {})
_EOF = b"# EOF\n"  # the end of an OpenMetrics exposition


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


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer is written (a probe's timeout, a scanner, a
    reset) costs one debug line, not the plain-text traceback ``socketserver`` prints on
    stderr, which anyone who reaches the port could otherwise pour into the JSON logs."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("an HTTP client went away before its answer")
            return
        log.exception("an HTTP request failed")


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
        routes: Mapping[str, HttpRoute] | None = None,
    ) -> None:
        self._readiness = readiness
        self._registries = tuple(registries)
        self._api = api
        self._routes = dict(routes or {})
        self._server = _QuietServer((host, port), self._handler())
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

    def metrics(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition of every registry, concatenated (their metric names are disjoint),
        and its content type: OpenMetrics (which carries the latency histograms' exemplars,
        the trace ids) when the scraper's ``Accept`` asks for it, as Prometheus does, else the
        text format."""
        encode, content_type = choose_encoder(accept or "")
        parts = [encode(registry) for registry in self._registries]
        if content_type.startswith("application/openmetrics-text"):
            # One exposition: each registry's "# EOF" would end it early; one goes at the end.
            parts = [part.removesuffix(_EOF) for part in parts] + [_EOF]
        return b"".join(parts), content_type

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
        if state.relays:
            body["relays"] = state.relays
        return (200 if state.ready else 503), body

    def route(self, path: str) -> HttpRoute | None:
        """The route whose prefix ``path`` starts with, if any."""
        return next((r for p, r in self._routes.items() if path.startswith(p)), None)

    def got(self, request: BaseHTTPRequestHandler, path: str) -> Answer:
        """A GET no fixed endpoint took: the status API's answer under ``/api/`` when one is
        mounted, else its route's, else 404."""
        if path.startswith("/api/") and self._api is not None:
            code, body, headers = self._api(request.path, request.headers.get("Authorization"))
            return code, json.dumps(body).encode(), "application/json", headers
        route = self.route(path)
        return _NOT_FOUND if route is None else self.answer(route, request, b"")

    def posted(self, request: BaseHTTPRequestHandler) -> Answer:
        """A POST's answer: its route's, 404 without one, 400/413 for a missing, bad or
        oversized Content-Length (the body is then left unread and the connection closed)."""
        route = self.route(request.path.split("?", 1)[0])
        if route is None:
            return _NOT_FOUND
        raw = request.headers.get("Content-Length")
        chunked = "chunked" in (request.headers.get("Transfer-Encoding") or "").lower()
        try:  # no length and no chunking (``curl -X POST`` with no data): an empty body
            length = int(raw) if raw is not None else (-1 if chunked else 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_ROUTE_BODY:
            request.close_connection = True
            code = 413 if length > MAX_ROUTE_BODY else 411
            return code, b'{"status": "bad_length"}', "application/json", {}
        return self.answer(route, request, request.rfile.read(length))

    def answer(self, route: HttpRoute, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        """``route``'s answer (headers given lower-cased); 500 if it raises."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            return route(request.command, request.path, headers, body)
        except Exception:
            log.exception("an HTTP route failed")
            return 500, b"", "text/plain", {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            # A client that stops sending (a slow or stalled body) frees its thread after this
            # long instead of holding it for ever.
            timeout = 30

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/health":
                    self._json(200, {"status": "ok"})
                elif path == "/readyz":
                    self._json(*owner.ready_answer())
                elif path == "/metrics":
                    self._send(200, *owner.metrics(self.headers.get("Accept")))
                else:  # the status API, a route's GET (its page, or 405), else 404
                    self._send(*owner.got(self, path))

            def do_POST(self) -> None:
                self._send(*owner.posted(self))

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
