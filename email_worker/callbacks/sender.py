"""POSTs status callbacks over kept-alive HTTP/1.1 connections (the standard ``http.client``).

One POST per email makes this the hottest HTTP path. Measured on the 2-core development
machine, one keep-alive POST cost ~0.77 ms of client CPU through httpx, ~0.48 ms through urllib3
and ~0.1 ms through ``http.client``; this module adds only what the rules need on top:

- TLS verified against the system's CAs (``ssl.create_default_context``), hostname included;
- redirects never followed (a 3xx is an answer), no proxy taken from the environment;
- a timeout on connecting and on every read;
- at most ``max_answer_bytes`` of an answer read: past that the connection is dropped, so a
  huge answer costs nothing;
- Nagle off, so a body written after its headers is not held for the peer's delayed ACK;
- the answer's headers read by ``answer.py`` (the same headers, without ``email.parser``);
- no SSRF (RELIABILITY rule 15): the URL is read by ``url_policy.parse_url``, the parser that
  checked it, and with a ``UrlPolicy`` a URL that is not on the operator's own callback origin
  is sent only to an allow-listed name and only to addresses the policy checked (every address
  the name resolves to; the connection never resolves it again). Refused: ``NoAnswer`` named
  ``HostNotAllowed``, ``NameNotResolved`` or ``AddressNotAllowed``.

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

from email_worker.callbacks.answer import Answer as _Response
from email_worker.callbacks.url_policy import IPAddress, Refused, UrlPolicy, parse_url, resolve

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
    ``RemoteProtocolError``, ``NetworkError``, ``InvalidURL``, and from the SSRF policy
    ``HostNotAllowed``, ``NameNotResolved``, ``AddressNotAllowed``), stored as the row's last
    error."""


class CallbackHttp:
    """``post(url, body, headers)`` → ``Answer``; raises ``NoAnswer``."""

    def __init__(
        self,
        timeout: float,
        *,
        max_answer_bytes: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
        policy: UrlPolicy | None = None,
    ) -> None:
        """``policy`` None trusts every URL (tools and tests); the worker passes one."""
        self._policy = policy
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
        try:
            addresses = self._addresses(origin)
        except Refused as exc:
            raise NoAnswer(str(exc)) from exc
        except OSError as exc:  # the name does not resolve
            raise NoAnswer("ConnectError") from exc
        tls = self._tls if scheme == "https" else None
        conn = _PinnedConnection(host, port, self._timeout, addresses, tls)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise NoAnswer("ConnectTimeout") from exc
        except OSError as exc:  # refused, unreachable, TLS verification
            conn.close()
            raise NoAnswer("ConnectError") from exc
        return conn

    def _addresses(self, origin: _Origin) -> list[IPAddress]:
        if self._policy is None:
            return resolve(origin[1], origin[2])
        return self._policy.addresses(origin)  # checked: every address the name resolves to

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
    parsed = parse_url(url)  # the parser ``host_allowed`` checked the URL with
    if parsed is None:
        raise NoAnswer("InvalidURL")
    return parsed.origin, parsed.target


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to ``addresses`` only (never resolving ``host`` itself), Nagle off; with
    ``tls``, verifies the certificate for ``host``. Answers are read by ``answer.Answer``
    (``http.client``'s, with a header parser that costs a fraction of ``email.parser``)."""

    response_class = _Response

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        addresses: list[IPAddress],
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._tls = tls
        if tls is not None:
            self.default_port = 443  # so the Host header leaves out ":443"

    def connect(self) -> None:
        sock = _open(self._addresses, self.port, self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _open(addresses: list[IPAddress], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts one."""
    failure: OSError = ConnectionRefusedError("no address")
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as exc:
            failure = exc
    raise failure
