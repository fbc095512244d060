"""Each relay's own circuit breaker: a failing relay rests, then is probed by one trial send.

    closed ──(fail_max failures in a row)──▶ open ──(reset_seconds)──▶ one trial (half-open)
    trial healthy ──▶ closed          trial failed ──▶ open again       trial neutral ──▶ open,
                                                                        the next send may try

Why not pybreaker (which templates_client uses): the router must ask "may this relay be tried
now?" while choosing among relays, without side effects; a recovering relay gets **one** trial
at a time (pybreaker lets every concurrent caller through while half-open); and the clock is
injected, so the state machine is tested without sleeping. It is also pure, as the core must be
(tests/unit/test_core_purity.py keeps pybreaker in templates_client/). Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    """What one send said about the relay (``failover.health`` decides)."""

    HEALTHY = "healthy"  # the relay answered (accepted, or refused the message itself)
    FAILED = "failed"  # the relay could not take it, or lost it after the final dot
    NEUTRAL = "neutral"  # says nothing about the relay (our pool was full, unsafe content)


@dataclass(frozen=True)
class Ticket:
    """Permission to send through the relay once; ``trial`` when it is the half-open probe."""

    trial: bool


class RelayBreaker:
    """``begin()`` before a send (None: the relay rests), ``end(ticket, health)`` after."""

    def __init__(
        self,
        *,
        fail_max: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fail_max < 1 or reset_seconds <= 0:
            raise ValueError("fail_max must be at least 1 and reset_seconds positive")
        self._fail_max, self._reset, self._clock = fail_max, reset_seconds, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        self._trial = False  # a trial send is in flight

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (a trial in flight), as the breaker gauge and
        readiness report it."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._trial else "open"

    def available(self) -> bool:
        """Whether ``begin()`` would give a ticket now (no side effect)."""
        with self._lock:
            return self._may_begin()

    def begin(self) -> Ticket | None:
        """A ticket to send, or None while the relay rests (or its one trial is in flight)."""
        with self._lock:
            if not self._may_begin():
                return None
            if self._opened_at is None:
                return Ticket(trial=False)
            self._trial = True
            return Ticket(trial=True)

    def end(self, ticket: Ticket, health: Health) -> None:
        """Record what the send of ``ticket`` said about the relay."""
        with self._lock:
            if ticket.trial:
                self._trial = False
                if health is Health.HEALTHY:
                    self._failures, self._opened_at = 0, None
                elif health is Health.FAILED:
                    self._opened_at = self._clock()  # rest again, a full period
                return  # neutral: still open; the next send may be the trial
            if self._opened_at is not None:
                return  # a send begun before the breaker opened: the trial decides
            if health is Health.HEALTHY:
                self._failures = 0
            elif health is Health.FAILED:
                self._failures += 1
                if self._failures >= self._fail_max:
                    self._opened_at = self._clock()

    def _may_begin(self) -> bool:
        if self._opened_at is None:
            return True
        return not self._trial and self._clock() - self._opened_at >= self._reset
