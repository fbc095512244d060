"""POSTs status callbacks over kept-alive HTTP/1.1 connections (the standard ``http.client``).

One POST per email makes this the hottest HTTP path. Measured on the 2-core development
machine, one keep-alive POST cost ~0.77 ms of client CPU through httpx, ~0.48 ms through urllib3
and ~0.1 ms through ``http.client``; this module adds only what the rules need on top:

- TLS verified against the system's CAs (``ssl.create_default_context``), hostname included;
- redirects never followed (a 3xx is an answer), no proxy taken from the environment;
- a timeout on connecting and on every read;
- at most ``max_answer_bytes`` of an answer read: past that the connection is dropped, so a
  huge answer costs nothing;
- Nagle off, so a body written after its headers is not held for the peer's delayed ACK.

Thread-safe: each thread keeps its own connection per origin. A kept-alive connection that the
server closed while idle fails at once; that POST is retried once on a new connection (the
callback's ``webhook-id`` lets the gateway drop the rare duplicate).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_Origin = tuple[str, str, int]

# Failures that a server closing an idle kept-alive connection produces on its next use.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None


class NoAnswer(Exception):
    """No HTTP answer: the URL is unusable, or connecting, writing or reading failed. ``str()``
    is a short stable name (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
    ``RemoteProtocolError``, ``NetworkError``, ``InvalidURL``), stored as the row's last error."""


class CallbackHttp:
    """``post(url, body, headers)`` → ``Answer``; raises ``NoAnswer``."""

    def __init__(
        self,
        timeout: float,
        *,
        max_answer_bytes: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._limit = max_answer_bytes
        self._tls = tls or ssl.create_default_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pools: list[dict[_Origin, http.client.HTTPConnection]] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        origin, target = _split(url)
        pool = self._pool()
        conn = pool.pop(origin, None)
        if conn is not None:
            try:
                answer, reusable = self._exchange(conn, target, body, headers)
            except _STALE:
                conn = None  # closed by the server while idle: once more on a new connection
        if conn is None:
            conn = self._connect(origin)
            try:
                answer, reusable = self._exchange(conn, target, body, headers)
            except _STALE as exc:
                raise NoAnswer("RemoteProtocolError") from exc
        if reusable:
            pool[origin] = conn
        else:
            conn.close()
        return answer

    def close(self) -> None:
        """Close the idle connections of every thread (at shutdown)."""
        with self._lock:
            for pool in self._pools:
                for conn in list(pool.values()):
                    conn.close()
                pool.clear()

    def _pool(self) -> dict[_Origin, http.client.HTTPConnection]:
        pool: dict[_Origin, http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
            with self._lock:
                self._pools.append(pool)
        return pool

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            conn.close()
            raise NoAnswer("ConnectTimeout") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS verification
            conn.close()
            raise NoAnswer("ConnectError") from exc
        return conn

    def _exchange(
        self, conn: http.client.HTTPConnection, target: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[Answer, bool]:
        """One POST; the answer, and whether ``conn`` can carry the next one (the answer was
        read to its end). On failure ``conn`` is closed and a ``_STALE`` error passes through
        (the caller may try again); any other becomes ``NoAnswer``."""
        try:
            conn.request("POST", target, body=body, headers=dict(headers))
            response = conn.getresponse()
            response.read(self._limit)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            conn.close()
            if isinstance(exc, _STALE):
                raise
            raise NoAnswer(_failure_name(exc)) from exc
        reusable = response.isclosed() and not response.will_close
        return Answer(response.status, response.getheader("Retry-After")), reusable


def _failure_name(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, http.client.HTTPException):
        return "RemoteProtocolError"
    return "NetworkError"  # ValueError: a header or URL http.client refuses


def _split(url: str) -> tuple[_Origin, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise NoAnswer("InvalidURL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NoAnswer("InvalidURL")
    default = 443 if parts.scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port or default), target
