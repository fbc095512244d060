"""A real, programmable SMTP server for tests and the demo, on aiosmtpd.

``SmtpTestServer`` listens on a free loopback port in a daemon thread, records every message it
accepts or swallows before dropping the connection (``ambiguous``: the relay has it, the client
never heard back) and answers from scripted ``Behaviour``s: per recipient, else from a global
queue, else accept. It advertises PIPELINING unless told not to, can require STARTTLS or speak
implicit TLS (a self-signed certificate from the ``openssl`` CLI) and check fixed credentials.
Importable outside pytest.

Warnings hazard: pytest runs with ``-W error`` and warning filters are process-wide, so a warning
raised in the server thread becomes an exception there and silently kills a connection. The
server therefore avoids every code path that warns: it passes its loop to ``SMTP`` (no
``get_event_loop`` probing), never sets ``auth_required`` without TLS (it enforces "530 auth
required" in ``handle_MAIL`` instead) and never uses the deprecated hooks.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.support.certs import SelfSignedCert, make_self_signed_cert, smtp_cert_fixture

__all__ = [  # the TLS helpers are re-exported: one import for the demo and the tests
    "ACCEPT",
    "Behaviour",
    "ReceivedMessage",
    "SelfSignedCert",
    "SmtpTestServer",
    "make_self_signed_cert",
    "smtp_cert",
    "smtp_cert_fixture",
    "smtp_server",
    "smtp_server_factory",
    "smtp_server_factory_fixture",
    "smtp_server_fixture",
]

TlsMode = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class Behaviour:
    """What the server does with one transaction. ``None`` replies mean "accept"."""

    rcpt: str | None = None  # full reply at RCPT, e.g. "550 5.1.1 no such user"
    data: str | None = None  # full reply at the end of DATA, e.g. "554 5.6.0 rejected"
    drop: bool = False  # read the whole message, then close the connection without replying
    delay: float = 0.0  # seconds to wait before the end-of-DATA reply
    # Keep the message before the delay (a relay that queued it and answers late), so a
    # client that dies during the delay leaves a copy behind; otherwise kept after it.
    keep_first: bool = False


ACCEPT = Behaviour()


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    ambiguous: bool = False  # the client was never told the message was accepted
    received_at: float = field(default_factory=time.time)  # when the server kept it (epoch s)

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    @property
    def message_id(self) -> str | None:
        value = self.parsed()["Message-ID"]
        return None if value is None else str(value)


class _Handler:
    """aiosmtpd hooks; runs in the server's event-loop thread."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # this hook's duty in aiosmtpd's five-argument form
        if self.owner.pipelining:  # aiosmtpd reads commands one at a time: pipelining just works
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.owner.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        behaviour = self.owner.next_behaviour(address)
        if behaviour.rcpt is not None:
            return behaviour.rcpt
        envelope.behaviour = behaviour
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        behaviour: Behaviour = getattr(envelope, "behaviour", ACCEPT)
        self.owner.data_received()
        await self.owner.paced()
        if behaviour.keep_first:
            self.owner.record(envelope, ambiguous=False)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.drop:
            self.owner.record(envelope, ambiguous=True)
            server.transport.close()
            # aiosmtpd treats a cancelled handler as a lost connection: no reply is pushed.
            raise asyncio.CancelledError
        if behaviour.data is not None:
            return behaviour.data
        refusal = self.owner.refusal()  # a server of its own may refuse here (throttling)
        if refusal is not None:
            return refusal
        if not behaviour.keep_first:
            self.owner.record(envelope, ambiguous=False)
        return "250 2.0.0 Ok: queued as TEST"


class _Controller(Controller):
    """Binds a socket we made (free port, reusable after a restart) and counts connections."""

    def __init__(self, owner: SmtpTestServer, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), hostname=owner.host, port=owner.port, **kwargs)
        self._owner = owner
        self._sock = sock
        self._protocols: list[SMTP] = []

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        self._owner.connection_opened()
        protocol = SMTP(self.handler, loop=self.loop, **self.SMTP_kwargs)
        self._protocols.append(protocol)
        return protocol

    def stop(self, no_assert: bool = False) -> None:
        # The base class only cancels tasks: open client transports (and the raw sockets under
        # a failed TLS handshake) would leak, a ResourceWarning at garbage collection and so an
        # error under -W error. Close them inside the loop first. ``_transports`` is the
        # selector loop's registry of socket transports: private, but this loop is ours.
        def close_transports() -> None:
            for protocol in self._protocols:
                if protocol.transport is not None:
                    protocol.transport.close()
            for transport in list(getattr(self.loop, "_transports", {}).values()):
                transport.close()

        self.loop.call_soon_threadsafe(close_transports)
        super().stop(no_assert)


class SmtpTestServer:
    """``start()``/``stop()``/``restart()``; ``script(address, ...)`` and ``enqueue(...)``."""

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        cert: SelfSignedCert | None = None,
        credentials: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        pipelining: bool = True,
    ) -> None:
        if tls != "none" and cert is None:
            raise ValueError("TLS needs a certificate (make_self_signed_cert)")
        self.tls, self.cert, self.credentials, self.host = tls, cert, credentials, host
        self.pipelining = pipelining  # advertise PIPELINING (RFC 2920), as Postfix and Exim do
        self.port = 0
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Behaviour]] = {}
        self._queue: deque[Behaviour] = deque()
        self._messages: list[ReceivedMessage] = []
        # At most this many end-of-DATA replies per second, all connections together (a relay
        # that paces its replies); None: as fast as it can.
        self.reply_rate: float | None = None
        self._next_reply = 0.0
        self._rcpts: dict[str, int] = {}
        self._opened = 0  # factory calls, the start-up probes included
        self._probes = 0
        self._data_count = 0
        self._controller: _Controller | None = None

    # Scripting and inspection (any thread).
    def script(self, address: str, *behaviours: Behaviour) -> None:
        """Transactions to ``address`` use ``behaviours`` in order, then accept."""
        with self._lock:
            self._scripts.setdefault(address.lower(), deque()).extend(behaviours)

    def enqueue(self, *behaviours: Behaviour) -> None:
        """The next transactions (any recipient without its own script) use ``behaviours``."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Client connections accepted so far (the controller's start-up probes excluded)."""
        with self._lock:
            return self._opened - self._probes

    def rcpt_count(self, address: str) -> int:
        """RCPT commands naming ``address`` (any case) so far, accepted or refused."""
        with self._lock:
            return self._rcpts.get(address.lower(), 0)

    def next_behaviour(self, address: str) -> Behaviour:  # called once per RCPT command
        with self._lock:
            self._rcpts[address.lower()] = self._rcpts.get(address.lower(), 0) + 1
            script = self._scripts.get(address.lower())
            if script:
                return script.popleft()
            return self._queue.popleft() if self._queue else ACCEPT

    def record(self, envelope: Any, *, ambiguous: bool) -> None:
        content = envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        message = ReceivedMessage(envelope.mail_from, tuple(envelope.rcpt_tos), data, ambiguous)
        with self._lock:
            self._messages.append(message)

    @property
    def data_transactions(self) -> int:
        """Messages whose final dot arrived (replied to or not), since start."""
        with self._lock:
            return self._data_count

    async def paced(self) -> None:
        """Wait for this reply's turn under ``reply_rate`` (in the server's loop only)."""
        if not self.reply_rate:
            return
        now = time.monotonic()
        turn = max(now, self._next_reply)
        self._next_reply = turn + 1 / self.reply_rate
        await asyncio.sleep(turn - now)

    def refusal(self) -> str | None:
        """The reply refusing a message about to be accepted at the end of DATA, or None
        (accept). Called in the server's loop; subclasses refuse (``tests.support.throttling``)."""
        return None

    def data_received(self) -> None:  # called by the handler at the end of DATA
        with self._lock:
            self._data_count += 1

    def connection_opened(self) -> None:  # called by the controller's factory
        with self._lock:
            self._opened += 1

    # Lifecycle.
    def start(self) -> SmtpTestServer:
        if self._controller is not None:
            raise RuntimeError("already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        controller = _Controller(self, sock, **self._smtp_options())
        controller.start()  # makes one probe connection, counted in _opened
        with self._lock:
            self._probes += 1
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (as a crashing relay would)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """Stop, then listen again on the same port (pooled client connections are now dead)."""
        self.stop()
        self.start()

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _smtp_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"server_hostname": "localhost", "ready_timeout": 10.0}
        if self.cert is not None and self.tls != "none":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert.cert, self.cert.key)
            if self.tls == "starttls":
                options.update(tls_context=context, require_starttls=True)
            else:
                options["ssl_context"] = context
        if self.credentials is not None:
            # Enforced in handle_MAIL; auth_required without TLS would warn (see module doc).
            options.update(authenticator=self._authenticate, auth_require_tls=False)
        return options

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        expected = self.credentials
        ok = (
            expected is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password)
            == (expected[0].encode(), expected[1].encode())
        )
        # handled=False: aiosmtpd itself answers "535" to a failure.
        return AuthResult(success=ok, handled=False)


# pytest fixtures, defined under ``name=`` so that a test module can import them
# (``smtp_server_fixture``) without its parameters shadowing the import (ruff F811).


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpTestServer]:
    """A plain (no TLS, no auth) server that accepts everything unless scripted."""
    with SmtpTestServer() as server:
        yield server


@pytest.fixture(name="smtp_server_factory")
def smtp_server_factory_fixture() -> Iterator[Callable[..., SmtpTestServer]]:
    """``smtp_server_factory(tls=..., cert=..., credentials=...)``: started, stopped after."""
    started: list[SmtpTestServer] = []

    def make(**kwargs: Any) -> SmtpTestServer:
        server = SmtpTestServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# The plain names too, for modules that import ``smtp_server`` itself.
smtp_server = smtp_server_fixture
smtp_server_factory = smtp_server_factory_fixture
smtp_cert = smtp_cert_fixture
