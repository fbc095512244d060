"""The relay connections of one process: at most ``limit`` open, shared by the sending threads.

A send holds one of ``limit`` slots from before it takes a connection until after it has given
the connection back (or discarded it), so the relay never sees more than ``limit`` connections
from this process, however many messages are in flight. Idle connections are reused last in,
first out: under light load the same few stay warm and the rest age out at the relay.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from schemas.failures import DeferredFailure, Reason


@dataclass(frozen=True)
class PoolCounts:
    """A snapshot for the metrics: connections in a transaction or being opened, connections
    open and unused, and sends waiting for a slot."""

    busy: int
    idle: int
    waiting: int


class SmtpPool:
    """Thread-safe. ``connect`` opens and greets a new connection, raising what it raises."""

    def __init__(
        self, connect: Callable[[], smtplib.SMTP], *, limit: int, wait_seconds: float
    ) -> None:
        self._connect = connect
        self._limit, self._wait = limit, wait_seconds
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._idle: list[smtplib.SMTP] = []
        self._open: set[smtplib.SMTP] = set()
        self._waiting = 0
        # Counted busy: a relay that does not answer holds every slot in connect, and the
        # gauges must not show that as a pool with nothing to do.
        self._connecting = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``limit`` slots. The wait is bounded (the message's claim is leased):
        a relay so slow that no connection frees up in time defers the message
        (``DeferredFailure``, no attempt spent) instead of holding it past its lease."""
        with self._lock:
            self._waiting += 1
        try:
            acquired = self._slots.acquire(timeout=self._wait)
        finally:
            with self._lock:
                self._waiting -= 1
        if not acquired:
            raise DeferredFailure(
                Reason.SMTP_UNAVAILABLE,
                f"no SMTP connection free within {self._wait:g} s ({self._limit} in use)",
            )
        try:
            yield
        finally:
            self._slots.release()

    def take(self, *, fresh: bool) -> tuple[smtplib.SMTP, bool]:
        """An idle connection (``reused`` True) unless ``fresh``, else a new one. Only while
        holding a slot."""
        if not fresh:
            with self._lock:
                if self._idle:
                    return self._idle.pop(), True
        with self._lock:
            self._connecting += 1
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._connect()
        finally:
            with self._lock:
                self._connecting -= 1
                if smtp is not None:
                    self._open.add(smtp)
        return smtp, False

    def give_back(self, smtp: smtplib.SMTP) -> None:
        """Return a connection whose transaction completed; it will be reused."""
        with self._lock:
            if smtp in self._open:  # not if close() ran meanwhile
                self._idle.append(smtp)
                return
        smtp.close()

    def discard(self, smtp: smtplib.SMTP) -> None:
        """Close a connection in an unknown state; it is never reused."""
        with self._lock:
            self._open.discard(smtp)
        smtp.close()

    def close(self) -> None:
        """QUIT and close every connection, idle or not."""
        with self._lock:
            connections, self._open, self._idle = list(self._open), set(), []
        for smtp in connections:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def counts(self) -> PoolCounts:
        with self._lock:
            idle = len(self._idle)
            busy = len(self._open) - idle + self._connecting
            return PoolCounts(busy=busy, idle=idle, waiting=self._waiting)
