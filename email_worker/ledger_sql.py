"""The ledger's SQL: calls of the functions that migration ``002_batched_ledger`` creates.

A batch travels as one JSON array of row objects (psycopg2 formats each parameter on the
client, about 5 us each: one parameter instead of one per field), each with its 1-based
``pos``, which the results name. ``lock_timeout`` ('100ms'; NULL keeps the session's setting)
bounds the statement's wait for another transaction's row lock.
"""

from __future__ import annotations

from email_worker.prepared import Prepared

# Planned once per connection (``prepared.py``).
CLAIM_MANY = Prepared(
    "ew_claim_many",
    "SELECT pos, attempts, claimed_from"
    " FROM ew_claim_many(%(batch)s, %(lease_seconds)s, %(lock_timeout)s)",
    {"batch": "jsonb", "lease_seconds": "float8"},
)
FINISH_MANY = Prepared(
    "ew_finish_many",
    "SELECT pos, outbox_id FROM ew_finish_many(%(batch)s, %(grace)s, %(lock_timeout)s)",
    {"batch": "jsonb", "grace": "float8"},
)

# One callback row outside an outcome (a rejected message); its id, or NULL. Not prepared:
# it runs inside a transaction, where a first-use failure would abort it.
ENQUEUE_CALLBACK = """
SELECT ew_enqueue_callback(%(webhook_id)s, %(request_id)s, %(notification_id)s,
                           %(correlation_id)s, %(cb_status)s, %(cb_error)s, %(url)s, %(grace)s)
"""

REJECT = """
INSERT INTO email_requests (request_id, payload_hash, status, notification_id, correlation_id,
    failure_reason, failure_detail) VALUES (%s, '', 'failed', %s, %s, %s, %s)
ON CONFLICT (request_id) DO NOTHING
"""

EVENT = """
INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
VALUES (%s, %s, %s, %s, %s, %s)
"""
