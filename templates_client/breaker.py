"""A circuit breaker for outbound HTTP (RELIABILITY rule 17): pybreaker's state machine, used so
that no lock is held during the guarded call, with its two surprises translated.

Hazards of using ``pybreaker.CircuitBreaker.call`` directly from a thread pool:
- ``call`` holds the breaker's lock for the whole guarded call, so every worker thread waits
  behind one slow request. ``calling()`` (a context manager) releases the lock before the body
  runs; the state machine is the same.
- The call that trips the breaker raises ``CircuitBreakerError`` instead of its own error, even
  though the request *was* made. ``Breaker.call`` re-raises the request's own error then, and
  raises ``BreakerOpen`` only when no request was attempted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pybreaker

from schemas.failures import PermanentFailure, SystemicFailure

T = TypeVar("T")


class BreakerOpen(Exception):
    """The breaker refused the call: nothing was sent to the dependency."""


class Breaker:
    """Counts consecutive failures of a dependency; after ``fail_max`` of them refuses calls for
    ``reset_seconds``, then lets calls through as trials (half-open) until one succeeds (closed)
    or fails (open again). A ``PermanentFailure`` (a 404: the service answered) or a
    ``SystemicFailure`` (a 401/403: the service answered, our credentials are wrong, and the
    consumer pauses for it) is not a dependency failure: it never counts and resets the count
    like a success."""

    def __init__(self, name: str, *, fail_max: int, reset_seconds: float) -> None:
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            exclude=[PermanentFailure, SystemicFailure],
            name=name,
        )

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``. An open breaker whose reset time has
        passed still reads ``"open"`` until the next call tries the dependency."""
        return str(self._breaker.current_state)

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` under the breaker. Raises ``BreakerOpen`` when the breaker refused
        (``func`` not called); otherwise returns or raises exactly what ``func`` did."""
        raised: BaseException | None = None
        try:
            with self._breaker.calling():
                try:
                    return func()
                except BaseException as exc:
                    raised = exc
                    raise
        except pybreaker.CircuitBreakerError as exc:
            if raised is None:
                raise BreakerOpen(f"{self._breaker.name} circuit breaker open") from exc
        # Reached only when this call's own failure tripped the breaker and pybreaker replaced
        # it with CircuitBreakerError: the request was made, so its real error is the answer.
        assert raised is not None
        raise raised
