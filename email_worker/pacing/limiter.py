"""``RouteLimiter``: one route's slots in this replica, handed to waiting threads highest
priority first (first come, first served within a priority).

Slots come from the shared store in batches (``store.py``): one round trip reserves ``k``
consecutive slots, ``k`` sized to this replica's demand (about a quarter of a second's worth,
at most ``max_batch``), so a replica asks the store a few times a second per route at most,
however fast it sends. The thread at the head of the queue sleeps until the next slot's time
and takes it; the others sleep until they become the head. A thread whose slot would come
later than ``max_wait`` seconds after it arrived is refused at once with ``TurnRefused``, a
``ThrottledFailure`` (its message waits in a delay queue, spending no attempt, or the relay
router hands it to another relay) instead of holding a consumer thread.

The jitter budget. Store slots are ``(1 + margin) / rate`` apart, so ``rate`` consecutive slots
span ``1 + margin`` seconds, and a relay counting over any one-second window sees more than
``rate`` only if some send reaches it later, relative to the send ``rate`` slots after it, than
``margin`` seconds. Lateness has three parts: (1) taking a slot after its time (a thread wakes
up late): slots older than ``margin / 4`` are dropped, not used; (2) mapping the store's clock
to this process's (``store.StoreClock``): off by half the quickest round trip to the store at
most, whatever a slow answer took; (3) the send itself, from taking the slot to the relay's
answer (a cold connection, thread scheduling, a slow relay: measured at 2 ms usually and 40 to
180 ms at times on a loaded 2-core host). The first two stay within the margin; for the third,
a send that finishes more than ``margin / 2`` after its slot *pushes* the store's next free
slot by the excess (``finished``, ``RateStore.push``), so the slot ``rate`` places later,
reserved after the push (batches reach a quarter of a second ahead per replica, the push
comes within the send's lateness), is still ``1 + margin / 2`` seconds after this send's
slot plus its lateness. A late send costs one store call and a little of the rate.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from email_worker.pacing.store import RateStore, Reservation, StoreClock, spacing_for
from schemas.failures import ThrottledFailure

BATCH_SECONDS = 0.25  # a batch covers about this much of the route's time
MAX_BATCH = 200
# How a thread sleeps on its condition (the lock held): tests pass one that moves a fake clock.
Wait = Callable[[threading.Condition, float], object]


def condition_wait(condition: threading.Condition, timeout: float) -> object:
    return condition.wait(timeout)


class TurnRefused(ThrottledFailure):
    """This replica's own refusal of a slot further away than a thread may wait: not an
    answer of the relay, so it slows no route (``RoutePacer.report`` ignores it)."""


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]  # (-priority, arrival order): the heap's head goes first
    wake: threading.Condition = field(compare=False)


class RouteLimiter:
    """Thread-safe. ``acquire`` blocks for a slot of ``route``; ``drop`` forgets this replica's
    unused slots (after a throttle: they were reserved at the old rate)."""

    def __init__(
        self,
        route: str,
        ceiling: float | None,
        store: RateStore,
        *,
        max_wait: float,
        margin: float,
        clock: Callable[[], float] = time.monotonic,
        wait: Wait = condition_wait,
        max_batch: int = MAX_BATCH,
        store_clock: StoreClock | None = None,
    ) -> None:
        self.route, self._ceiling, self._store = route, ceiling, store
        self._max_wait, self._margin, self._max_batch = max_wait, margin, max_batch
        self._clock, self._sleep = clock, wait
        self._store_clock = store_clock or StoreClock()  # shared by a pacer's limiters
        self._late = margin / 4  # seconds a slot may be taken after its time
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        self._slots: deque[float] = deque()  # local clock, ascending
        self._spacing = spacing_for(ceiling or 1.0, margin)
        self._next_free = -math.inf  # no slot is free in the store before this (local clock)
        self._refilling = False
        self._unlimited = False
        self._lateness = (-math.inf, 0.0)  # (next slot after a late send, its excess) to push
        self._pushing = False
        self._dropped_at = -math.inf
        self._demand = (clock(), 0, 0.0)  # (window start, arrivals in it, last rate per second)

    @property
    def waiting(self) -> int:
        """Threads waiting for a slot now."""
        with self._lock:
            return len(self._waiters)

    @property
    def unlimited(self) -> bool:
        """The store said the route has no rate in force (an unconfigured route recovered)."""
        return self._unlimited

    def acquire(self, priority: int, patience: float | None = None) -> float | None:
        """Wait for this route's next slot; return its time (this process's clock), None when
        the route turned out unlimited. Raises ``ThrottledFailure`` when the slot is more than
        ``max_wait`` (or a shorter ``patience``) away and whatever the store raises
        (``DeferredFailure``) when it cannot be reached."""
        arrived = self._clock()
        with self._lock:
            self._count_arrival(arrived)
            waiter = _Waiter((-priority, next(self._order)), threading.Condition(self._lock))
            heapq.heappush(self._waiters, waiter)
            try:
                wait = self._max_wait if patience is None else min(patience, self._max_wait)
                return self._await(waiter, arrived + wait)
            finally:
                self._leave(waiter)

    def finished(self, slot: float, at: float) -> None:
        """A send from ``slot`` finished ``at`` (local clock). Later than ``margin / 2``, the
        excess moves the store's next free slot (``RateStore.push``), so that the send ``rate``
        slots after this one cannot come less than a second after it, however late this one
        was. One push at a time per route: late sends meanwhile are merged into the next."""
        excess = at - slot - self._margin / 2
        if excess <= 0:
            return
        with self._lock:
            after, most = self._lateness
            self._lateness = (max(after, slot + self._spacing), max(most, excess))
            if self._pushing:
                return  # the pushing thread pushes this too before it stops
            self._pushing = True
        try:
            while True:
                with self._lock:
                    (after, excess), self._lateness = self._lateness, (-math.inf, 0.0)
                    if excess <= 0:
                        return
                self._store.push(self.route, self._store_clock.remote(after), excess)
        finally:
            with self._lock:
                self._pushing = False

    def drop(self) -> None:
        """Forget the unused slots and what the store last said (a throttle changed the rate)."""
        with self._lock:
            self._slots.clear()
            self._next_free = -math.inf
            self._unlimited = False
            self._dropped_at = self._clock()

    def fresh(self, slot: float) -> bool:
        """``slot`` was taken at the rate in force (after the last ``drop``)."""
        return slot >= self._dropped_at

    # Under the lock.
    def _await(self, waiter: _Waiter, deadline: float) -> float | None:
        while not self._unlimited:
            now = self._clock()
            if self._waiters[0] is not waiter:
                eta = self._estimate(waiter, now)
                if eta > deadline or now >= deadline:
                    raise self._refusal(max(eta - now, self._spacing))
                self._sleep(waiter.wake, deadline - now)
                continue
            while self._slots and self._slots[0] < now - self._late:
                self._slots.popleft()  # too late to use without bunching sends
            if self._slots:
                slot = self._slots[0]
                if slot <= now:
                    return self._slots.popleft()
                if slot > deadline:
                    raise self._refusal(slot - now)
                self._sleep(waiter.wake, slot - now)
            elif self._next_free > deadline or now >= deadline:
                raise self._refusal(max(self._next_free - now, self._spacing))
            elif self._refilling:  # another thread is asking the store: it wakes the head
                self._sleep(waiter.wake, deadline - now)
            else:
                self._refill(now)
        return None

    def _refill(self, now: float) -> None:
        count = self._batch_size(now)
        self._refilling = True
        self._lock.release()  # never hold the queue while the store answers
        try:
            sent = self._clock()
            reservation = self._store.reserve(self.route, self._ceiling, count, self._max_wait)
            received = self._clock()
            self._store_clock.observe(sent, received, reservation.now)
        finally:
            self._lock.acquire()
            self._refilling = False
            if self._waiters:
                self._waiters[0].wake.notify()
        self._place(reservation)

    def _place(self, reservation: Reservation) -> None:
        """The reserved slots, in the local clock (``StoreClock``: within half the quickest
        round trip of the store's)."""
        if reservation.rate is None:
            self._unlimited = True
            self._slots.clear()
            return
        self._spacing = reservation.spacing
        first = self._store_clock.local(reservation.start)
        self._slots.extend(first + i * reservation.spacing for i in range(reservation.granted))
        self._next_free = first + reservation.granted * reservation.spacing

    def _leave(self, waiter: _Waiter) -> None:
        was_head = self._waiters[0] is waiter
        if was_head:
            heapq.heappop(self._waiters)
        else:
            self._waiters.remove(waiter)
            heapq.heapify(self._waiters)
        if was_head and self._waiters:
            self._waiters[0].wake.notify()

    def _estimate(self, waiter: _Waiter, now: float) -> float:
        """When ``waiter`` would get a slot if nobody of higher priority arrived."""
        ahead = sum(1 for other in self._waiters if other.key < waiter.key)
        if ahead < len(self._slots):
            return self._slots[ahead]
        after = self._slots[-1] + self._spacing if self._slots else now
        return max(after, self._next_free) + (ahead - len(self._slots)) * self._spacing

    def _count_arrival(self, now: float) -> None:
        started, arrivals, rate = self._demand
        if now - started >= 1.0:
            self._demand = (now, 1, arrivals / (now - started))
        else:
            self._demand = (started, arrivals + 1, rate)

    def _batch_size(self, now: float) -> int:
        """About ``BATCH_SECONDS`` of this replica's demand, at least the threads waiting, at
        most ``BATCH_SECONDS`` of the route's rate (and ``max_batch``)."""
        started, arrivals, rate = self._demand
        demand = max(rate, arrivals / max(now - started, BATCH_SECONDS))
        rate_now = (1.0 + self._margin) / self._spacing
        cap = max(1, min(self._max_batch, int(rate_now * BATCH_SECONDS)))
        wanted = max(len(self._waiters), math.ceil(demand * BATCH_SECONDS))
        return max(1, min(cap, wanted))

    def _refusal(self, wait: float) -> TurnRefused:
        return TurnRefused(
            self.route, f"rate limit: next slot in {wait:.1f}s", retry_after=round(wait, 3)
        )
