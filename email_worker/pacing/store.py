"""The port to the store every replica shares (Postgres, or Redis when ``REDIS_URL`` is set),
and the slot arithmetic the stores apply (GCRA, the generic cell rate algorithm).

Per route the store keeps ``tat``, the next free time slot, in its own clock. Reserving ``k``
slots at spacing ``s`` takes ``start = max(tat, now, paused_until)`` and moves ``tat`` to
``start + k * s``: the slots ``start, start + s, ...`` now belong to the caller alone. Slots of
all replicas are therefore at least ``s`` apart whoever reserved them, and ``s`` is
``(1 + margin) / rate``: any ``rate`` consecutive slots span ``1 + margin`` seconds, which is
what keeps a relay counting over any one-second window at or under ``rate`` even though each
send leaves a little after its slot (see ``limiter.py`` for the jitter budget).

A reservation never starts further ahead than ``horizon`` seconds (the longest a thread may
wait): beyond it nothing is reserved (``granted`` 0), so a replica that gives up does not
waste the slots of the others. The stores raise ``DeferredFailure`` when unreachable.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol

from email_worker.pacing.adaptive import RouteState


@dataclass(frozen=True)
class Reservation:
    """Slots ``start + i * spacing`` for ``i < granted``, in the store's clock (epoch
    seconds); ``now`` is that clock when reserving. ``rate`` None: the route is unlimited
    (an unconfigured route that recovered), nothing was reserved."""

    start: float
    spacing: float
    granted: int
    now: float
    rate: float | None


@dataclass(frozen=True)
class Throttle:
    """The route's state after a throttle was reported; ``halved`` False when another report
    halved it less than ``Recovery.debounce`` seconds before."""

    state: RouteState
    now: float
    halved: bool


@dataclass(frozen=True)
class Snapshot:
    """Every route throttled recently (or paused), at the store's ``now``."""

    now: float
    routes: dict[str, RouteState] = field(default_factory=dict)


class RateStore(Protocol):
    """Built with the slot margin and the ``Recovery`` policy; thread-safe."""

    def reserve(self, route: str, ceiling: float | None, count: int, horizon: float) -> Reservation:
        """Reserve up to ``count`` consecutive slots of ``route`` at its rate in force (the
        ``ceiling`` when never throttled), none starting later than ``horizon`` seconds from
        the store's now. One round trip."""
        ...

    def throttle(
        self, route: str, ceiling: float | None, observed: float, retry_after: float | None
    ) -> Throttle:
        """Halve the route's rate (debounced across replicas) and pause it ``retry_after``
        seconds when given. One round trip."""
        ...

    def push(self, route: str, after: float, excess: float) -> None:
        """A send was ``excess`` seconds later than the margin allows: the next free slot
        becomes ``max(tat, after) + excess`` (``after``: the late slot's successor, store
        clock). One round trip."""
        ...

    def snapshot(self) -> Snapshot:
        """The routes throttled within ``Recovery.remembered`` seconds or paused now."""
        ...

    def close(self) -> None: ...


def spacing_for(rate: float, margin: float) -> float:
    """Seconds between two slots of a route at ``rate``: ``rate`` slots span ``1 + margin``."""
    return (1.0 + margin) / rate


def reserve_slots(
    tat: float, now: float, paused_until: float, spacing: float, count: int, horizon: float
) -> tuple[float, int]:
    """The GCRA reservation: ``(start, granted)``; the new ``tat`` is
    ``start + granted * spacing``. The SQL and Lua stores compute exactly this."""
    start = max(tat, now, paused_until)
    if start - now > horizon:
        return start, 0
    fits = math.floor((now + horizon - start) / spacing) + 1
    return start, max(0, min(count, fits))


class StoreClock:
    """The store's clock in this process's clock, NTP's way: the store read its clock somewhere
    between our sending and our receiving, so the midpoint is off by half the round trip at
    most; the estimate from the quickest round trip is kept (an older one counts as a little
    slower, ``AGEING`` seconds per second, so drift is followed) unless a new one contradicts
    it (the store's clock was stepped). A slow answer then moves no slot. Thread-safe."""

    AGEING = 1e-4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._best: tuple[float, float, float] | None = None  # (round trip, offset, when)

    def observe(self, sent: float, received: float, store_now: float) -> None:
        trip = max(0.0, received - sent)
        offset = store_now - (sent + received) / 2
        with self._lock:
            if self._best is not None:
                best_trip, best_offset, at = self._best
                aged = best_trip + (received - at) * self.AGEING
                consistent = abs(offset - best_offset) <= (trip + aged) / 2
                if consistent and trip > aged:
                    return
            self._best = (trip, offset, received)

    def local(self, store_time: float) -> float:
        """``store_time`` in the local clock (``observe`` must have been called)."""
        return store_time - self._offset()

    def remote(self, local_time: float) -> float:
        """``local_time`` in the store's clock."""
        return local_time + self._offset()

    def _offset(self) -> float:
        with self._lock:
            assert self._best is not None, "no round trip observed yet"
            return self._best[1]
