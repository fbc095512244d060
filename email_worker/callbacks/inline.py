"""In-process callback delivery: a ``Notifier`` that hands outbox rows straight to a
``CallbackDispatcher`` on a small thread pool, for the demo and single-process setups.

Production uses ``tasks.CeleryNotifier`` (its own processes, so a slow gateway never shares a
core with sending). Either way the outbox row is committed first and beat re-drives what a
notifier failed to deliver: this class adds no guarantee of its own and loses none.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.sender import CallbackHttp
from email_worker.ledger.db import Database
from schemas.failures import WorkerFailure

log = logging.getLogger(__name__)


class InlineNotifier:
    """Delivers each handed-over row on a background thread; ``close`` waits for them."""

    def __init__(
        self,
        dispatcher: CallbackDispatcher,
        *,
        threads: int = 2,
        owned: tuple[Database, CallbackHttp] | None = None,
    ) -> None:
        """``owned``: the database and sender the dispatcher uses, closed by ``close``."""
        self._dispatcher = dispatcher
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="callbacks")
        self._owned = owned

    def hand_over(self, outbox_id: int) -> None:
        """Never raises; a row that is not delivered now is re-driven by beat."""
        self._pool.submit(self._deliver, outbox_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._owned is not None:
            db, http = self._owned
            http.close()
            db.close()

    def _deliver(self, outbox_id: int) -> None:
        try:
            self._dispatcher.deliver(outbox_id)
        except WorkerFailure as failure:
            log.warning(
                "callback not delivered now; beat re-drives it",
                extra={"outbox_id": outbox_id, "reason": str(failure.reason)},
            )
