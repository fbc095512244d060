"""The ledger's upkeep, run by ``email-worker beat`` through the callbacks worker: silent
leases marked ``unknown``, and finished requests pruned after the retention period."""

from __future__ import annotations

from email_worker.db import Database


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
             AND o.state IN ('delivered', 'superseded', 'dead'))
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
