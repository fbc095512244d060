"""Every statement on ``callback_outbox`` outside the migrations: the dispatcher's (claim,
settle, explain, re-drive) and the metrics' count of rows still to deliver.

Rows are written by the ledger (``ew_enqueue_callback`` in migration 002) in the transaction of
the status they report; these statements only move a row through its states:
``pending`` → ``delivered`` | ``superseded`` | ``rejected`` (the gateway answered a final 4xx)
| ``dead`` (too old). Every result write is fenced by the attempt number the dispatcher
claimed: a dispatcher whose lease ran out (and whose row was claimed again) writes nothing.
"""

from __future__ import annotations

from email_worker.ledger.db import Database

# A short dispatcher lease in ``in_flight_until``; order per request: a row with a newer one
# behind it is not sent, and a newer one waits while an older one is on the wire.
CLAIM = """
UPDATE callback_outbox o SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease)s),
    in_flight_until = now() + make_interval(secs => %(lease)s)
WHERE o.id = ANY(%(ids)s) AND o.state = 'pending'
  AND (o.attempts = 0 OR o.next_attempt_at <= now())
  AND NOT EXISTS (SELECT 1 FROM callback_outbox n
                  WHERE n.request_id = o.request_id AND n.id > o.id)
  AND NOT EXISTS (SELECT 1 FROM callback_outbox p
                  WHERE p.request_id = o.request_id AND p.id < o.id
                    AND p.state = 'pending' AND p.in_flight_until > now())
RETURNING o.id, o.attempts, o.webhook_id, o.callback_url, o.request_id, o.notification_id,
          o.correlation_id, o.status, o.error, o.event_at, o.request_attempts, o.traceparent
"""

EXPLAIN = """
SELECT o.state,
       EXISTS (SELECT 1 FROM callback_outbox n WHERE n.request_id = o.request_id AND n.id > o.id),
       EXISTS (SELECT 1 FROM callback_outbox p WHERE p.request_id = o.request_id AND p.id < o.id
               AND p.state = 'pending' AND p.in_flight_until > now())
FROM callback_outbox o WHERE o.id = %s
"""

SUPERSEDE = """
UPDATE callback_outbox SET state = 'superseded' WHERE id = %s AND state = 'pending'
  AND (in_flight_until IS NULL OR in_flight_until <= now())
"""

BLOCKED = (
    "UPDATE callback_outbox SET next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s"
)

_FENCE = "WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'"

# A row settled for good without delivery: %(state)s is 'rejected' or 'dead'.
FINAL = f"""
UPDATE callback_outbox SET state = %(state)s, in_flight_until = NULL, last_error = %(error)s
{_FENCE}
"""

# The common outcome of a batch, settled in one statement; a row not returned was re-claimed.
DELIVERED = """
UPDATE callback_outbox o SET state = 'delivered', in_flight_until = NULL, last_error = NULL,
    delivered_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS d(id, attempt)
WHERE o.id = d.id AND o.attempts = d.attempt AND o.state = 'pending'
RETURNING o.id
"""

RESCHEDULE = f"""
UPDATE callback_outbox SET in_flight_until = NULL, last_error = %(error)s,
    next_attempt_at = now() + make_interval(secs => %(delay)s),
    state = CASE WHEN created_at < now() - make_interval(secs => %(max_age)s)
                 THEN 'dead' ELSE 'pending' END
{_FENCE}
RETURNING state
"""

# Beat's re-drive marks what it hands over, so a row is not enqueued again on every tick
# while the callback workers are down; it becomes eligible again after one lease.
DUE = """
UPDATE callback_outbox SET redriven_at = now()
WHERE id IN (SELECT id FROM callback_outbox
             WHERE state = 'pending' AND next_attempt_at <= now()
               AND (redriven_at IS NULL OR redriven_at < now() - make_interval(secs => %s))
             ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def pending_callbacks(db: Database) -> int:
    """Outbox rows still to deliver (the ``email_worker_callbacks_pending`` gauge). Raises
    ``DeferredFailure`` when Postgres is down."""
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM callback_outbox WHERE state = 'pending'")
        row = cur.fetchone()
        return int(row[0]) if row else 0
