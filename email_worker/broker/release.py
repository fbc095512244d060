"""The release of scheduled sends (CONTRACT section 14): a thread of ``email-worker run`` that,
every ``SCHEDULE_POLL_SECONDS``, publishes the copy of each held request whose send_at came
to the email queue, by name through the default exchange (confirmed and mandatory, so no
binding can drop it), and marks it released in the same transaction (``ledger.schedules``).

Every replica runs one; the ledger's row locks (``SKIP LOCKED``) keep them from publishing the
same copy, and idempotency keeps a copy published twice (a crash between the confirm and the
commit) to one email. A held request occupies no consumer: its message was acked when it was
held, and the ledger alone keeps it until then, across restarts of the worker and the broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from email_worker.broker.publisher import Publisher, PublishError
from email_worker.broker.retry_copies import rebuild
from email_worker.ledger.db import Database
from email_worker.ledger.schedules import DueCopy, release_due
from email_worker.ops.metrics import count_released
from schemas.failures import DeferredFailure

log = logging.getLogger(__name__)

RELEASE_BATCH = 100
# Full batches are released back to back, up to this many per tick, so a burst of sends due
# at the same minute does not wait one tick per hundred; then the next tick takes over.
MAX_BATCHES_PER_TICK = 50


class Closeable(Protocol):
    def close(self) -> None: ...


class Releaser:
    """Publishes due held requests until ``stop``. ``release_once`` is one pass (tests)."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        queue: str,
        *,
        interval: float,
        batch: int = RELEASE_BATCH,
        owned: Sequence[Closeable] = (),
    ) -> None:
        """``owned``: what ``stop`` closes once the thread ended (its own connections)."""
        self._owned = tuple(owned)
        self._db = db
        self._publisher = publisher
        self._queue = queue
        self._interval = interval
        self._batch = batch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="schedule-release", daemon=True)

    def start(self) -> Releaser:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the pass in progress (its transaction commits or rolls back)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            # Stuck in a publish (a blocked broker): closing the publisher would wait for its
            # lock forever. The thread is a daemon; the process exit ends it.
            log.warning("the schedule release did not stop in time; leaving it to the exit")
            return
        for resource in self._owned:
            resource.close()

    def release_once(self) -> int:
        """Release what is due now, a batch at a time; returns how many were published.
        Raises ``DeferredFailure`` when the database is unavailable."""
        total = 0
        for _ in range(MAX_BATCHES_PER_TICK):
            taken, released = release_due(self._db, self._publish, self._batch)
            total += released
            if taken < self._batch or released < taken or self._stopping.is_set():
                break
        count_released(total)
        return total

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                released = self.release_once()
            except DeferredFailure as failure:  # the ledger is down: the next tick retries
                log.warning(
                    "could not release scheduled sends", extra={"reason": str(failure.reason)}
                )
                continue
            except Exception:  # a bug must not end the thread: scheduled sends would stall
                log.exception("unexpected error releasing scheduled sends")
                continue
            if released:
                log.info("scheduled sends released", extra={"released": released})

    def _publish(self, copy: DueCopy) -> bool:
        properties = rebuild(copy.properties, copy.first_attempt_at)
        try:
            self._publisher.publish("", self._queue, copy.body, properties)
        except PublishError as exc:
            log.warning(
                "could not publish a scheduled send; it stays held for the next pass",
                extra={"request_id": copy.request_id, "cause": exc.cause},
            )
            return False
        return True
