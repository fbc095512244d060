"""The ledger's SQL: the calls of the functions that migrations ``002_batched_ledger``,
``003_redeliveries_and_retry_copies`` and ``006_schedules_and_cancel`` create, and the JSON
rows those functions read.

A batch travels as one JSON array of row objects (psycopg2 formats each parameter on the
client, about 5 us each: one parameter instead of one per field), each with its 1-based
``pos``, which the results name. ``lock_timeout`` ('100ms'; NULL keeps the session's setting)
bounds the statement's wait for another transaction's row lock.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2

from email_worker.ports import Claim, Record
from email_worker.suppression.entries import address_key, normalise
from schemas.callback import CallbackStatus
from schemas.failures import Reason
from schemas.request import EmailRequest

# Plain statements: plpgsql plans each statement inside the functions once per session, so
# preparing the outer SELECT saved nothing measurable (benchmarks/micro/RESULTS.md).
CLAIM_MANY = (
    "SELECT pos, attempts, claimed_from, deliveries"
    " FROM ew_claim_batch2(%(batch)s, %(lease_seconds)s, %(lock_timeout)s)"
)
# The same claim, with each claimed row's address checked against the suppression list
# (migration 007) in the same statement: ``hashes`` holds the SHA-256 key of each row's
# address by ``pos`` (NULL for a row without one); the reason of a live entry, or NULL. The
# condition is ``SuppressionStore``'s (an expired entry counts as absent).
CLAIM_MANY_CHECKED = (
    "SELECT c.pos, c.attempts, c.claimed_from, c.deliveries,"
    " (SELECT s.reason FROM suppressions s WHERE s.address_hash = (%(hashes)s::bytea[])[c.pos]"
    " AND (s.expires_at IS NULL OR s.expires_at > now()))"
    " FROM ew_claim_batch2(%(batch)s, %(lease_seconds)s, %(lock_timeout)s) c"
)
# ew_finish_batch3 (migration 011): 003's, and it records the relay (a row's "relay" key, 010)
# and the attempts the outcome spent (its "spent" key).
FINISH_MANY = "SELECT pos, outbox_id FROM ew_finish_batch3(%(batch)s, %(grace)s, %(lock_timeout)s)"
# Tracing (migration 009): the outcomes' traceparents reach their outbox rows through a
# transaction-local setting that the outbox's trigger reads. It goes in the same simple query as
# FINISH_MANY (one round trip, one implicit transaction), and only when an outcome carries one.
SET_TRACEPARENTS = "SELECT set_config('email_worker.traceparents', %(traceparents)s, true);"

# One callback row outside an outcome (a rejected message); its id, or NULL.
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

Outcome = tuple[Claim, EmailRequest, Record]  # what ``finish`` writes


def claim_rows(batch: Sequence[EmailRequest], leases: list[str]) -> str:
    """The JSON rows ``ew_claim_batch2`` reads, ``pos`` counted from 1."""
    return json_rows(
        {
            "pos": k,
            "request_id": request.request_id,
            "payload_hash": request.payload_hash,
            "lease": lease,
            "notification_id": request.notification_id,
            "correlation_id": request.correlation_id,
            "template_code": request.template_code,
            "batch_id": request.batch_id,
            "recipient": request.recipient,
        }
        for k, (request, lease) in enumerate(zip(batch, leases, strict=True), start=1)
    )


def claim_statement(
    batch: Sequence[EmailRequest], *, checked: bool
) -> tuple[str, list[Any] | None]:
    """``CLAIM_MANY``, or with ``checked`` ``CLAIM_MANY_CHECKED`` and its ``hashes``: the
    suppression key of each request's address, None where it has none or one the list could
    not hold (the pipeline then asks the list itself, and gets its error for that one only)."""
    if not checked:
        return CLAIM_MANY, None
    return CLAIM_MANY_CHECKED, [_suppression_key(request.recipient) for request in batch]


def _suppression_key(address: str | None) -> Any:
    if not address:
        return None
    try:
        return psycopg2.Binary(address_key(normalise(address)))
    except ValueError:
        return None


def tokens(count: int) -> list[str]:
    """``count`` random 128-bit tokens in hex (leases, webhook ids), drawn from the system's
    random source in one call per batch rather than one per row."""
    drawn = secrets.token_hex(16 * count)
    return [drawn[32 * k : 32 * (k + 1)] for k in range(count)]


def finish_rows(outcomes: Sequence[Outcome]) -> str:
    """The JSON rows ``ew_finish_batch`` reads, ``pos`` counted from 1."""
    ids = tokens(len(outcomes))
    return json_rows(
        _finish_row(*outcome, ids[k - 1]) | {"pos": k} for k, outcome in enumerate(outcomes, 1)
    )


def _finish_row(claim: Claim, request: EmailRequest, record: Record, token: str) -> dict[str, Any]:
    email = record.email
    url = record.callback_url if record.callback is not None else None
    ids = (request.request_id, request.notification_id, request.correlation_id)
    error = error_text(record.reason, record.detail)
    row = outbox_params(ids, record.callback, error, url, token) | {
        "request_id": claim.request_id,
        "lease": claim.lease,
        "attempt": claim.attempt,
        "status": record.status.value,
        "recipient": record.recipient,
        "message_id": record.message_id,
        "reply": record.smtp_reply,
        "reason": record.reason.value if record.reason else None,
        "detail": record.detail or None,
        "subject": email.subject if email else None,
        "text_body": email.text if email else None,
        "html_body": email.html if email else None,
        "version": email.template_version if email else None,
    }
    if record.spent_attempts is not None:  # absent: the row keeps its count
        row["spent"] = record.spent_attempts
    if record.relay is not None:  # absent: the row keeps the relay it had
        row["relay"] = record.relay
    if record.provider_message_id is not None:  # ew_finish_batch2 sets the column of 008
        row["provider_message_id"] = record.provider_message_id
    if record.retry is not None:  # only retries carry these keys (absent keys read as NULL)
        row |= {
            "retry_in": record.retry.due_in,
            "retry_body": base64.b64encode(record.retry.body).decode("ascii"),
            "retry_props": dict(record.retry.properties),
        }
    return row


def traceparents(outcomes: Sequence[Outcome]) -> str | None:
    """The JSON object ``request_id`` -> ``traceparent`` of the outcomes whose callback
    continues their message's trace, or None when none does (tracing off)."""
    found = {
        claim.request_id: record.traceparent
        for claim, _, record in outcomes
        if record.traceparent is not None and record.callback is not None
    }
    return json.dumps(found, separators=(",", ":")) if found else None


def finish_statement(traced: bool) -> str:
    """``FINISH_MANY``, preceded by ``SET_TRACEPARENTS`` when ``traceparents`` found some."""
    return SET_TRACEPARENTS + FINISH_MANY if traced else FINISH_MANY


def error_text(reason: Reason | None, detail: str) -> str | None:
    """A callback's ``error``: ``<reason_code>: <detail>``, or the bare code."""
    if reason is None:
        return None
    return f"{reason.value}: {detail}" if detail else reason.value


def outbox_params(
    ids: tuple[str, str, str],
    status: CallbackStatus | None,
    error: str | None,
    url: str | None,
    token: str | None = None,
) -> dict[str, Any]:
    """The callback fields of a row (``ew_enqueue_callback``'s arguments): ``ids`` are the
    request, notification and correlation ids; ``token`` the webhook id's random part (drawn
    here when not given)."""
    request_id, notification_id, correlation_id = ids
    return {
        # Stable per event: stored once. Only used when there is a callback to send.
        "webhook_id": f"msg_{token or secrets.token_hex(16)}" if url else None,
        "request_id": request_id,
        "notification_id": notification_id,
        "correlation_id": correlation_id,
        "cb_status": status.value if status else None,
        "cb_error": error if status != CallbackStatus.DELIVERED else None,
        "url": url or None,
    }


def json_rows(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as the compact JSON array the ledger's batch functions read."""
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))
