"""Relays that fail before any message could be accepted, for the failover tests: a port that
refuses connections, and a server that greets every connection with a reply of its choosing
(``421 4.3.2 Service not available``) and hangs up. The programmable ``SmtpTestServer``
(tests/support/smtp.py) covers the rest: 535 at AUTH (``credentials=``), 550 at RCPT and a
connection dropped after the final dot (``Behaviour``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GreetingRefuser:
    """Accepts every connection, sends ``greeting`` and closes: an SMTP relay that refuses
    service at the greeting. Counts the connections it refused."""

    def __init__(self, greeting: str = "421 4.3.2 Service not available") -> None:
        self._greeting = greeting.encode("ascii") + b"\r\n"
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="greeting-refuser", daemon=True)

    @property
    def refused(self) -> int:
        with self._lock:
            return self._refused

    def start(self) -> GreetingRefuser:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:  # the accept timeout: look at the stop flag again
                continue
            # A client that left first needs nothing more.
            with conn, contextlib.suppress(OSError):
                conn.sendall(self._greeting)
            with self._lock:
                self._refused += 1


@pytest.fixture(name="greeting_refuser")
def greeting_refuser_fixture() -> Iterator[GreetingRefuser]:
    refuser = GreetingRefuser().start()
    yield refuser
    refuser.stop()


greeting_refuser = greeting_refuser_fixture
