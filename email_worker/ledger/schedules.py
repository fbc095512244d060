"""Held requests (CONTRACT section 14) on the ledger's side: one release transaction takes the
due ones, lets the caller publish each copy, and marks what was published.

The statements are functions of migration ``006_schedules_and_cancel``. The rows are locked
``FOR UPDATE SKIP LOCKED`` from the take to the commit, so two replicas never publish the same
copy, and the marks are committed only after the broker confirmed each copy. The hazard left
is a crash (or a lost connection) between a confirm and the commit: the row stays
``scheduled`` and its copy is published again by the next release, which is harmless (the
ledger sends a request once; the second copy is acked as a duplicate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from email_worker.ledger.db import Database

TAKE_DUE = (
    "SELECT request_id, retry_body, retry_properties, first_attempt_at"
    " FROM ew_take_due_schedules(%s)"
)
MARK_RELEASED = "SELECT ew_mark_released(%s)"
# The rows stay locked while their copies are published: if the broker hangs, Postgres ends
# the session after this long, which releases the locks (nothing was marked; the copies already
# confirmed are published again by the next release).
IDLE_TIMEOUT = "SET LOCAL idle_in_transaction_session_timeout = '60s'"


@dataclass(frozen=True)
class DueCopy:
    """A held request whose send_at came: its message as received and the properties
    ``broker.retry_copies.keep`` recorded, with the request's first attempt."""

    request_id: str
    body: bytes
    properties: Mapping[str, object]
    first_attempt_at: datetime | None


# Publishes one copy; True once the broker confirmed it, False when it refused (the batch stops
# there and the rest stay held for the next release).
Publish = Callable[[DueCopy], bool]


def release_due(db: Database, publish: Publish, limit: int) -> tuple[int, int]:
    """Take up to ``limit`` due held requests (database clock, oldest first, skipping rows
    another transaction holds), ``publish`` each, and mark the published ones ``pending``
    with their retry mark at now (beat's re-drive covers a copy the broker loses), all in one
    transaction. Returns ``(taken, released)``. Raises ``DeferredFailure`` when the database is
    unavailable; an exception from ``publish`` rolls everything back (nothing is marked)."""
    with db.transaction() as cur:
        cur.execute(IDLE_TIMEOUT)
        cur.execute(TAKE_DUE, (limit,))
        taken = [_due(row) for row in cur.fetchall()]
        released: list[str] = []
        for copy in taken:
            if not publish(copy):
                break
            released.append(copy.request_id)
        if released:
            cur.execute(MARK_RELEASED, (released,))
    return len(taken), len(released)


def _due(row: tuple[object, ...]) -> DueCopy:
    request_id, body, properties, first_attempt_at = row
    return DueCopy(
        request_id=str(request_id),
        body=bytes(body) if isinstance(body, bytes | memoryview) else b"",
        properties=properties if isinstance(properties, Mapping) else {},
        first_attempt_at=first_attempt_at if isinstance(first_attempt_at, datetime) else None,
    )
