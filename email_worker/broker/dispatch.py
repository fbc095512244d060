"""From intake to work: every delivery the consumer receives, from the email queue or from the
bulk lane, is given its priority and either handed to the mover (a low-priority one while the
worker has a deep backlog, see ``priority.LanePolicy``) or put in the local backlog, which the
``CONCURRENCY`` worker threads empty highest priority first (CONTRACT section 13).

Hazards handled here:
- ``receive`` runs on pika's I/O thread: it reads the priority (bounded, linear), takes a lock
  for a counter and a heap push, and never waits for anything (RELIABILITY rule 4).
- A delivery of a channel that is gone (a reconnect, or the end of a drain) was requeued by the
  broker: a worker thread that takes it drops it instead of sending what another consumer may
  be sending too (``live``).
- ``in_flight`` counts every delivery received and not finished (waiting, in progress, being
  moved): the drain waits for it to reach 0, after the settlements were queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from email_worker.backlog import Backlog
from email_worker.ports import Delivery
from email_worker.priority import LanePolicy, LaneState, delivery_priority

log = logging.getLogger(__name__)

# How long consumption may wait at start-up for the lane's depth (see ``ready``).
LANE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Received:
    """A delivery as taken in: its priority, and whether it came from the lane."""

    delivery: Delivery
    priority: int
    from_lane: bool = False


class Mover(Protocol):
    """Takes a delivery to copy to the lane (``broker/lane.py``); never blocks."""

    def submit(self, item: Received) -> None: ...


class Dispatcher:
    """The local backlog, its worker threads and the move decision."""

    def __init__(
        self,
        process: Callable[[Delivery], None],
        *,
        concurrency: int,
        policy: LanePolicy,
        live: Callable[[Delivery], bool],
        requeue: Callable[[Delivery], None],
        max_message_bytes: int,
    ) -> None:
        self._process = process
        self._concurrency = concurrency
        self.policy = policy
        self._live = live
        self._requeue = requeue
        self._max_bytes = max_message_bytes
        self.backlog: Backlog[Received] = Backlog(policy.high)
        self.lane = LaneState()
        self._mover: Mover | None = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._window = 0  # unfinished deliveries from the email queue
        self._processed = 0  # deliveries the worker threads finished (the send rate's count)
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def window(self) -> int:
        """Unfinished deliveries from the email queue (waiting, in progress, being moved)."""
        with self._lock:
            return self._window

    @property
    def processed(self) -> int:
        """Deliveries the worker threads have finished since start-up (moves not counted)."""
        with self._lock:
            return self._processed

    def attach(self, mover: Mover) -> None:
        self._mover = mover

    def receive(self, delivery: Delivery, *, from_lane: bool = False) -> None:
        """On the I/O thread: queue ``delivery`` locally, or hand it to the mover."""
        priority = delivery_priority(
            delivery.body, delivery.properties.priority, max_bytes=self._max_bytes
        )
        item = Received(delivery, priority, from_lane)
        with self._lock:
            self._in_flight += 1
            window = self._window
            self._window += not from_lane
        lane = self.lane
        if (
            self._mover is not None
            and not from_lane
            and self.policy.moves(
                priority, window=window, lane_busy=lane.busy, lane_open=lane.open, deep=lane.deep
            )
        ):
            lane.submitted()  # before the next delivery's decision reads ``busy``
            self._mover.submit(item)
        else:
            self.backlog.put(item, priority)

    def hand_back(self, item: Received) -> None:
        """A move that failed: the original is processed here after all."""
        if not self.backlog.put(item, item.priority):
            self.finished(item)

    def finished(self, item: Received, *, processed: bool = False) -> None:
        with self._lock:
            self._in_flight -= 1
            self._window -= not item.from_lane
            self._processed += processed

    def ready(self) -> bool:
        """Whether consumption may start: with a lane, once its depth is known (so a later
        low-priority message neither overtakes one left there before a restart nor moves
        for nothing), or after ``LANE_WAIT_SECONDS`` (then it counts as holding messages)."""
        if self._mover is None or self.lane.known:
            return True
        return time.monotonic() >= self._started + LANE_WAIT_SECONDS

    def start(self) -> None:
        self._started = time.monotonic()
        for n in range(self._concurrency):
            thread = threading.Thread(target=self._work, name=f"email-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Hand out nothing more; wait for the messages in progress to finish."""
        self.backlog.close()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _work(self) -> None:
        while (item := self.backlog.take()) is not None:
            try:
                if self._live(item.delivery):
                    self._process(item.delivery)
            except Exception:
                # The processor settles every message itself; reaching here is a bug. Requeue
                # so nothing is lost; the delivery limit catches a message that keeps doing it.
                log.exception("unhandled error while processing a message")
                self._requeue(item.delivery)
            finally:
                self.finished(item, processed=True)
