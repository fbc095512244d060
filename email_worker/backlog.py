"""The local backlog: deliveries received and not yet taken by a worker thread, highest priority
first and, within one priority, in the order they were put (CONTRACT section 13).

It replaces a FIFO thread pool queue: the consumer's I/O thread puts every delivery here (it
never blocks: the lock is held for a heap push), the worker threads take the highest. The order
key is (-priority, arrival number), so two deliveries of one priority never swap, whatever
their other fields.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """A closable priority queue for many takers. ``high`` is the priority from which an item
    counts as high in ``waiting`` (``PRIORITY_HIGH``)."""

    def __init__(self, high: int) -> None:
        self._high = high
        self._ready = threading.Condition()
        self._heap: list[tuple[int, int, T]] = []
        self._arrivals = itertools.count()
        self._high_waiting = 0
        self._closed = False

    def put(self, item: T, priority: int) -> bool:
        """Queue ``item``; False (and nothing queued) once closed."""
        with self._ready:
            if self._closed:
                return False
            heapq.heappush(self._heap, (-priority, next(self._arrivals), item))
            self._high_waiting += priority >= self._high
            self._ready.notify()
            return True

    def take(self, timeout: float | None = None) -> T | None:
        """The highest-priority item, the earliest of its priority; waits up to ``timeout``
        (None: until one comes). None on timeout, or at once when closed: what is left in a
        closed backlog is never handed out."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._heap or self._closed, timeout):
                return None
            if self._closed:
                return None
            negative, _, item = heapq.heappop(self._heap)
            self._high_waiting -= -negative >= self._high
            return item

    def close(self) -> None:
        """Wake every taker; ``take`` returns None from now on."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def waiting(self) -> tuple[int, int]:
        """Items waiting now: (high-priority, the others)."""
        with self._ready:
            return self._high_waiting, len(self._heap) - self._high_waiting

    def __len__(self) -> int:
        with self._ready:
            return len(self._heap)
