"""``MemoryRateStore``: the shared store's semantics inside one process, for unit tests,
benchmarks and anything that runs a single replica without a database. It applies exactly
the arithmetic of ``store.reserve_slots`` and ``adaptive`` that the Postgres and Redis stores
apply in SQL and Lua, with an injectable clock (epoch seconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from email_worker.pacing.adaptive import Recovery, RouteState, halved, rate_in_force
from email_worker.pacing.store import Reservation, Snapshot, Throttle, reserve_slots, spacing_for


@dataclass
class _Row:
    tat: float = 0.0
    state: RouteState = field(default_factory=RouteState)


class MemoryRateStore:
    """A ``RateStore`` in a dictionary; ``calls`` counts the round trips a real store would
    make."""

    def __init__(
        self,
        *,
        margin: float,
        recovery: Recovery | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._margin = margin
        self._recovery = recovery or Recovery()
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def reserve(self, route: str, ceiling: float | None, count: int, horizon: float) -> Reservation:
        with self._lock:
            self.calls += 1
            now = self._clock()
            row = self._rows.setdefault(route, _Row())
            rate = rate_in_force(ceiling, row.state, now, self._recovery)
            if rate is None:
                return Reservation(now, 0.0, 0, now, None)
            spacing = spacing_for(rate, self._margin)
            start, granted = reserve_slots(
                row.tat, now, row.state.paused_until, spacing, count, horizon
            )
            row.tat = start + granted * spacing if granted else row.tat
            return Reservation(start, spacing, granted, now, rate)

    def throttle(
        self, route: str, ceiling: float | None, observed: float, retry_after: float | None
    ) -> Throttle:
        with self._lock:
            self.calls += 1
            now = self._clock()
            row = self._rows.setdefault(route, _Row())
            state = row.state
            paused = max(state.paused_until, now + (retry_after or 0.0))
            recent = state.throttled_at is not None and now - state.throttled_at < (
                self._recovery.debounce
            )
            if recent:
                row.state = replace(state, paused_until=paused)
                return Throttle(row.state, now, halved=False)
            base = halved(ceiling, state, observed, now, self._recovery)
            row.state = RouteState(base, now, paused)
            return Throttle(row.state, now, halved=True)

    def push(self, route: str, after: float, excess: float) -> None:
        with self._lock:
            self.calls += 1
            row = self._rows.setdefault(route, _Row())
            row.tat = max(row.tat, after) + excess

    def snapshot(self) -> Snapshot:
        with self._lock:
            self.calls += 1
            now = self._clock()
            since = now - self._recovery.remembered
            routes = {
                route: row.state
                for route, row in self._rows.items()
                if (row.state.throttled_at or 0.0) > since or row.state.paused_until > now
            }
            return Snapshot(now, routes)

    def close(self) -> None:
        return None
