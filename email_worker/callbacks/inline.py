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
from email_worker.config import Settings
from email_worker.ledger.db import Database
from schemas.failures import WorkerFailure

log = logging.getLogger(__name__)


class InlineNotifier:
    """Delivers each handed-over row on a background thread; ``close`` waits for them."""

    def __init__(self, dispatcher: CallbackDispatcher, *, threads: int = 2) -> None:
        self._dispatcher = dispatcher
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="callbacks")
        self._owned: tuple[Database, CallbackHttp] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> InlineNotifier:
        db = Database(settings.database_url.get_secret_value(), pool_size=2)
        http = CallbackHttp.from_settings(settings)
        notifier = cls(CallbackDispatcher.from_settings(db, http, settings))
        notifier._owned = (db, http)
        return notifier

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
