"""The ledger's SQL: calls of the functions that migration ``002_batched_ledger`` creates.

A batch travels as parallel arrays (element i of each belongs to request i), so any number of
requests costs one round trip and one commit; results name the request's position (1-based).
``lock_timeout`` ('100ms', '0ms' for none) bounds the statement's wait for another
transaction's row lock.
"""

from __future__ import annotations

from email_worker.prepared import Prepared

CLAIM_COLUMNS = (
    "request_id", "payload_hash", "lease", "notification_id", "correlation_id", "template_code",
    "batch_id", "recipient",
)  # fmt: skip

FINISH_COLUMNS = (
    "request_id", "lease", "attempt", "status", "recipient", "subject", "message_id",
    "html_body", "text_body", "reply", "version", "reason", "detail", "webhook_id",
    "notification_id", "correlation_id", "cb_status", "cb_error", "url",
)  # fmt: skip

_CALLBACK_COLUMNS = (
    "webhook_id", "request_id", "notification_id", "correlation_id", "cb_status", "cb_error",
    "url", "grace",
)  # fmt: skip


def _arguments(columns: tuple[str, ...]) -> str:
    return ", ".join(f"%({column})s" for column in columns)


def _array_types(columns: tuple[str, ...]) -> dict[str, str]:
    return {column: "integer[]" if column == "attempt" else "text[]" for column in columns}


# Planned once per connection (``prepared.py``). Every array is declared, so a batch whose
# elements are all NULL is still typed.
CLAIM_MANY = Prepared(
    "ew_claim_many",
    "SELECT pos, attempts, claimed_from FROM ew_claim_many("
    f"{_arguments(CLAIM_COLUMNS)}, %(lease_seconds)s, %(lock_timeout)s)",
    _array_types(CLAIM_COLUMNS) | {"lease_seconds": "float8"},
)
FINISH_MANY = Prepared(
    "ew_finish_many",
    "SELECT pos, outbox_id FROM ew_finish_many("
    f"{_arguments(FINISH_COLUMNS)}, %(grace)s, %(lock_timeout)s)",
    _array_types(FINISH_COLUMNS) | {"grace": "float8"},
)

# One callback row outside an outcome (a rejected message); its id, or NULL. Not prepared:
# it runs inside a transaction, where a first-use failure would abort it.
ENQUEUE_CALLBACK = f"SELECT ew_enqueue_callback({_arguments(_CALLBACK_COLUMNS)})"

REJECT = """
INSERT INTO email_requests (request_id, payload_hash, status, notification_id, correlation_id,
    failure_reason, failure_detail) VALUES (%s, '', 'failed', %s, %s, %s, %s)
ON CONFLICT (request_id) DO NOTHING
"""

EVENT = """
INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
VALUES (%s, %s, %s, %s, %s, %s)
"""
