"""Adaptive throttling: how a throttled route slows down and recovers, as pure functions of
the state the shared store keeps (CONTRACT section 12).

A route's shared state is ``(base, throttled_at, paused_until)``: the rate set by its last
halving, when that was, and a pause the relay advised. The rate in force is

    ceiling                                    never throttled (None: unlimited)
    min(ceiling, base * growth ** age)         throttled ``age`` seconds ago (configured route)
    base * growth ** age                       throttled, no ceiling, age < unlimited_after
    None (unlimited again)                     throttled, no ceiling, age >= unlimited_after

so a route recovers by itself (+10 % a second by default) with no writer: every replica, and
the store's own reservation statement, compute the same rate from the same row with the
store's clock. The store adapters (``ledger/rate_routes.py``, ``redis_store/``) apply this
formula in SQL and Lua with the parameters of ``Recovery``; tests hold the three to the same
answers.

A throttle halves the rate in force (for a route with no rate yet: this replica's observed
success rate on it, at least ``first_floor``), at most once per ``debounce`` seconds across
every replica: the sends in flight when a relay starts refusing all come back refused, and
must count as one signal, not thirty halvings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Recovery:
    """The adaptive policy's constants (one place: the stores receive them as parameters)."""

    growth: float = 1.1  # the rate in force grows by this factor per second without a throttle
    unlimited_after: float = 30.0  # an unconfigured route is unlimited again after this long
    debounce: float = 1.0  # one halving per route per this many seconds, whoever reports it
    min_rate: float = 0.1  # a route is never halved below this (emails per second)
    first_floor: float = 1.0  # the lowest starting point of a route with no rate before
    remembered: float = 600.0  # a store reports routes throttled within this many seconds


@dataclass(frozen=True)
class RouteState:
    """What the store keeps of a throttled route, in the store's clock (epoch seconds)."""

    base: float | None = None
    throttled_at: float | None = None
    paused_until: float = 0.0


def rate_in_force(
    ceiling: float | None, state: RouteState, now: float, recovery: Recovery
) -> float | None:
    """The route's rate at ``now`` (emails per second), None when unlimited."""
    if state.base is None or state.throttled_at is None:
        return ceiling
    age = max(0.0, now - state.throttled_at)
    if ceiling is None and age >= recovery.unlimited_after:
        return None
    # Past ~10 minutes of recovery the power overflows no float but is far beyond any ceiling.
    recovered: float = state.base * recovery.growth ** min(age, 600.0)
    return recovered if ceiling is None else min(ceiling, recovered)


def halved(
    ceiling: float | None, state: RouteState, observed: float, now: float, recovery: Recovery
) -> float:
    """The new base rate after a throttle at ``now``: half the rate in force, or half of the
    observed rate (at least ``first_floor``) on a route that had none."""
    current = rate_in_force(ceiling, state, now, recovery)
    if current is None:
        current = max(observed, recovery.first_floor)
    return max(recovery.min_rate, current / 2)


class SuccessMeter:
    """Accepted sends per route lately (two one-second buckets), the starting point of a route
    throttled before it had a rate. A route seen for less than two seconds is measured over the
    time it was seen (half a second at least, against a burst of two sends): a relay that
    throttles half a second after the first send must not look four times slower than it was.
    Memory is bounded by the routes seen within two seconds. Thread-safe; ``note`` is a
    dictionary update under a lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._second = int(clock())
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        self._first: dict[str, float] = {}  # first note of each route in the current bucket

    def note(self, routes: tuple[str, ...]) -> None:
        with self._lock:
            now = self._roll()
            for route in routes:
                self._current[route] = self._current.get(route, 0) + 1
                self._first.setdefault(route, now)

    def rate(self, route: str) -> float:
        """Accepted per second on ``route`` since it was first seen, over two seconds at most
        and half a second at least."""
        with self._lock:
            now = self._roll()
            previous = self._previous.get(route, 0)
            since = self._second - 1 if previous else self._first.get(route, now)
            span = min(2.0, max(0.5, now - since))
            return (self._current.get(route, 0) + previous) / span

    def _roll(self) -> float:
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else {}
            self._current, self._first = {}, {}
            self._second = second
        return now
