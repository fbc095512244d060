"""The ledger's upkeep, run by ``email-worker beat`` through the callbacks worker: silent
leases marked ``unknown``, scheduled retries whose copy the broker lost re-driven, finished
requests pruned after the retention period (with every stored body: they are columns of the
rows), and suppression entries whose expiry passed deleted."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from email_worker.broker.publisher import Publisher, PublishError
from email_worker.broker.retry_copies import rebuild
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ledger.suppressions import SuppressionStore
from email_worker.ops.metrics import count_redriven

log = logging.getLogger(__name__)
REDRIVE_BATCH = 100


def expire_leases(db: Database, grace_seconds: float = 60.0) -> int:
    """Mark ``unknown`` (with a ``lease_expired`` event) each ``sending`` request whose lease
    expired over ``grace_seconds`` ago: its worker went silent, maybe after the relay took the
    message. The owner is kept, so a late live worker can still record its outcome."""
    with db.transaction() as cur:
        cur.execute(  # returns the count of events appended, one per expired lease
            "WITH expired AS ("
            " UPDATE email_requests SET status = 'unknown', updated_at = now()"
            " WHERE status = 'sending'"
            "   AND lease_expires_at < now() - make_interval(secs => %s)"
            " RETURNING request_id, attempts)"
            " INSERT INTO email_events (request_id, event, status, attempt, detail)"
            " SELECT request_id, 'lease_expired', 'unknown', attempts,"
            "        'lease expired without an outcome' FROM expired",
            (grace_seconds,),
        )
        return cur.rowcount


_PRUNE = """
WITH gone AS (
    DELETE FROM email_requests WHERE request_id IN (
        SELECT request_id FROM email_requests
        WHERE status IN ('sent', 'failed', 'unknown')
          AND updated_at < now() - make_interval(days => %(days)s)
        LIMIT %(batch)s)
    RETURNING request_id),
events AS (DELETE FROM email_events e USING gone WHERE e.request_id = gone.request_id),
outbox AS (DELETE FROM callback_outbox o USING gone
           WHERE o.request_id = gone.request_id
             AND o.state IN ('delivered', 'superseded', 'dead', 'rejected'))
SELECT count(*) FROM gone
"""


def prune(db: Database, retention_days: int, batch: int = 5000) -> int:
    """Delete finished requests (sent, failed, unknown) untouched for ``retention_days`` with
    their events and settled outbox rows, ``batch`` at a time; returns how many were deleted."""
    total = 0
    while True:
        with db.transaction() as cur:
            cur.execute(_PRUNE, {"days": retention_days, "batch": batch})
            row = cur.fetchone()
        deleted = int(row[0]) if row else 0
        total += deleted
        if deleted < batch:
            return total


def prune_suppressions(db: Database) -> int:
    """Delete the suppression entries whose ``expires_at`` has passed (they already count as
    absent; this keeps the table to live entries); returns how many. 0 while migration 007 is
    missing: the rest of the upkeep still runs."""
    try:
        pruned = SuppressionStore(db).prune_expired()
    except SchemaBehind:
        log.warning("suppression entries not pruned: the schema lacks 007_suppressions")
        return 0
    if pruned:
        log.info("expired suppression entries pruned", extra={"count": pruned})
    return pruned


# Take the overdue retries, oldest first, and move each mark to now: a copy lost again is
# re-driven once per overdue period. Committed before publishing, so no row lock is held
# across the broker (a claim of the copy never waits for beat); SKIP LOCKED keeps two beats
# (or a claim in progress) from taking the same row.
_TAKE_OVERDUE = """
WITH due AS (
    SELECT request_id, retry_due_at FROM email_requests
    WHERE retry_due_at < now() - make_interval(secs => %(overdue)s)
      AND status IN ('pending', 'unknown') AND retry_body IS NOT NULL
    ORDER BY retry_due_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED)
UPDATE email_requests r SET retry_due_at = now()
FROM due WHERE r.request_id = due.request_id
RETURNING r.request_id, due.retry_due_at, r.retry_due_at, r.retry_body, r.retry_properties,
          r.first_attempt_at
"""

_REDRIVEN_EVENTS = """
INSERT INTO email_events (request_id, event, status, attempt, detail)
SELECT request_id, 'retry_redriven', status, attempts, 'the retry copy was overdue'
FROM email_requests WHERE request_id = ANY(%(ids)s)
"""

# Marks of copies that could not be published go back, unless a claim cleared them meanwhile.
_GIVE_BACK = """
UPDATE email_requests r SET retry_due_at = x.due
FROM unnest(%(ids)s::text[], %(due)s::timestamptz[]) AS x(request_id, due)
WHERE r.request_id = x.request_id AND r.retry_due_at = %(taken_at)s
"""


def redrive_retries(
    db: Database,
    publisher: Publisher,
    queue: str,
    overdue_seconds: float,
    batch: int = REDRIVE_BATCH,
) -> int:
    """Publish again, to ``queue`` by name through the default exchange (mandatory, confirmed),
    each request whose scheduled retry is overdue by more than ``overdue_seconds``: the broker
    lost its copy (or holds it far too long; idempotency keeps either case to one email).
    Returns how many were published, counted in ``email_worker_retries_redriven_total``. When
    the broker refuses, the rest keep their marks for the next run."""
    with db.transaction() as cur:
        cur.execute(_TAKE_OVERDUE, {"overdue": overdue_seconds, "batch": batch})
        taken = cur.fetchall()
    published: list[str] = []
    for row in taken:
        try:
            _publish(publisher, queue, row)
        except PublishError as exc:
            log.warning(
                "could not re-drive overdue retries; the next run tries again",
                extra={"pending": len(taken) - len(published), "error": str(exc)},
            )
            break
        published.append(row[0])
    _settle(db, taken, published)
    count_redriven(len(published))
    return len(published)


def _publish(publisher: Publisher, queue: str, row: tuple[Any, ...]) -> None:
    request_id, was_due, _, body, properties, first_attempt_at = row
    overdue = (row[2] - was_due).total_seconds() if isinstance(was_due, datetime) else None
    publisher.publish("", queue, bytes(body), rebuild(properties or {}, first_attempt_at))
    log.warning(
        "a scheduled retry was overdue: re-published from the ledger",
        extra={"request_id": request_id, "overdue_s": round(overdue or 0.0, 1)},
    )


def _settle(db: Database, taken: list[tuple[Any, ...]], published: list[str]) -> None:
    """Audit events for the copies published; the marks of the others put back."""
    if not taken:
        return
    done = set(published)
    left = [row for row in taken if row[0] not in done]
    with db.transaction() as cur:
        if published:
            cur.execute(_REDRIVEN_EVENTS, {"ids": published})
        if left:
            ids, due = [row[0] for row in left], [row[1] for row in left]
            cur.execute(_GIVE_BACK, {"ids": ids, "due": due, "taken_at": taken[0][2]})
