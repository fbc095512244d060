"""The idempotency ledger in Postgres: who owns a request, what became of it, and its audit trail.

``PgLedger`` implements the ``Ledger`` port (RELIABILITY rules 7-9). A claim is one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement that either wins a lease or returns no
row; every later write is fenced by the lease token, so a worker whose lease was taken over
writes nothing. Leases use the database clock only. Each status change appends to
``email_events`` and, when a callback is due, inserts its ``callback_outbox`` row in the same
transaction. No transaction or row lock is held beyond the ledger's own statements. The
maintenance ``email-worker beat`` runs on these tables lives in ``maintenance.py``.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from psycopg2.extensions import cursor

from email_worker.db import Database
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record
from email_worker.prepared import Prepared
from schemas.callback import CallbackStatus
from schemas.failures import DeferredFailure, PermanentFailure, Reason
from schemas.request import EmailRequest

# A new outbox row waits this long before beat's re-drive may pick it up, so the immediate
# hand-over (which may claim a never-attempted row at once) does not race beat.
HANDOVER_GRACE_SECONDS = 30.0

_CLAIM = """
INSERT INTO email_requests AS r (
    request_id, payload_hash, status, lease_owner, lease_expires_at, attempts,
    notification_id, correlation_id, template_code, batch_id, recipient, first_attempt_at)
VALUES (%(request_id)s, %(payload_hash)s, 'sending', %(lease)s,
        now() + make_interval(secs => %(lease_seconds)s), 1,
        %(notification_id)s, %(correlation_id)s, %(template_code)s, %(batch_id)s,
        %(recipient)s, now())
ON CONFLICT (request_id) DO UPDATE SET
    status = 'sending', claimed_from = r.status, payload_hash = EXCLUDED.payload_hash,
    lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at,
    attempts = r.attempts + 1, notification_id = EXCLUDED.notification_id,
    correlation_id = EXCLUDED.correlation_id, template_code = EXCLUDED.template_code,
    batch_id = EXCLUDED.batch_id, first_attempt_at = COALESCE(r.first_attempt_at, now()),
    updated_at = now()
WHERE (r.payload_hash = EXCLUDED.payload_hash OR r.payload_hash = '')
  AND (r.status IN ('pending', 'failed', 'unknown')
       OR (r.status = 'sending' AND r.lease_expires_at < now()))
RETURNING r.request_id, r.attempts, r.claimed_from
"""

# The claim and its event in one statement: one round trip on the hot path.
_CLAIM_WITH_EVENT = f"""
WITH claimed AS ({_CLAIM}),
event AS (
    INSERT INTO email_events (request_id, event, status, attempt)
    SELECT request_id, CASE WHEN claimed_from = 'sending' THEN 'taken_over' ELSE 'claimed' END,
           'sending', attempts
    FROM claimed)
SELECT attempts, claimed_from FROM claimed
"""

# Fenced by the lease token. 'unknown' is accepted because expire_leases() marks a silent
# lease unknown but keeps its owner: that owner may still record what really happened,
# until another worker claims the request (which replaces the token).
_FINISH = """
UPDATE email_requests SET
    status = %(status)s, lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
    recipient = COALESCE(%(recipient)s, recipient), subject = COALESCE(%(subject)s, subject),
    message_id = COALESCE(%(message_id)s, message_id), html_body = COALESCE(%(html)s, html_body),
    text_body = COALESCE(%(text)s, text_body), smtp_reply = COALESCE(%(reply)s, smtp_reply),
    template_version = COALESCE(%(version)s, template_version),
    failure_reason = %(reason)s, failure_detail = %(detail)s,
    sent_at = CASE WHEN %(status)s = 'sent' THEN now() ELSE sent_at END
WHERE request_id = %(request_id)s AND lease_owner = %(lease)s
  AND status IN ('sending', 'unknown')
RETURNING request_id
"""

# Callbacks never move backwards: nothing after 'delivered', no 'pending' after 'failed'.
# ``{source}`` yields the row to notify about (``request_id``), or nothing.
_OUTBOX = """
INSERT INTO callback_outbox (webhook_id, request_id, notification_id, correlation_id, status,
                             error, event_at, callback_url, next_attempt_at)
SELECT %(webhook_id)s, s.request_id, %(notification_id)s, %(correlation_id)s, %(cb_status)s,
       %(cb_error)s, now(), %(url)s, now() + make_interval(secs => %(grace)s)
FROM {source} s
WHERE %(url)s IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM callback_outbox o
    WHERE o.request_id = s.request_id
      AND (o.status = 'delivered' OR (%(cb_status)s = 'pending' AND o.status = 'failed')))
RETURNING id
"""

# Older rows still waiting are obsolete. A row in flight is left alone: the dispatcher will
# not send the newer row until it lands, so the gateway never sees them out of order.
_SUPERSEDE = """
UPDATE callback_outbox SET state = 'superseded'
WHERE request_id = %(request_id)s AND id < (SELECT id FROM inserted) AND state = 'pending'
  AND (in_flight_until IS NULL OR in_flight_until <= now())
"""

_OUTBOX_AND_SUPERSEDE = f"""
WITH inserted AS ({_OUTBOX.format(source="(SELECT %(request_id)s::text AS request_id)")}),
superseded AS ({_SUPERSEDE})
SELECT id FROM inserted
"""

# The whole outcome in one statement (one round trip, atomic without BEGIN/COMMIT): the fenced
# update, its event, and the callback row with its supersession. ``finished`` is 0 when the
# lease was lost, and then nothing at all is written.
_FINISH_ALL = f"""
WITH finished AS ({_FINISH}),
event AS (
    INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
    SELECT request_id, %(status)s, %(status)s, %(attempt)s, %(reason)s, %(detail)s
    FROM finished),
inserted AS ({_OUTBOX.format(source="finished")}),
superseded AS ({_SUPERSEDE})
SELECT (SELECT count(*) FROM finished), (SELECT id FROM inserted)
"""

# Planned once per connection (planning these CTEs cost more than running them).
_CLAIM_STATEMENT = Prepared("ew_claim", _CLAIM_WITH_EVENT, {"lease_seconds": "float8"})
_FINISH_STATEMENT = Prepared("ew_finish", _FINISH_ALL, {"attempt": "integer", "grace": "float8"})

_REJECT = """
INSERT INTO email_requests (request_id, payload_hash, status, notification_id, correlation_id,
    failure_reason, failure_detail) VALUES (%s, '', 'failed', %s, %s, %s, %s)
ON CONFLICT (request_id) DO NOTHING
"""

_EVENT = """
INSERT INTO email_events (request_id, event, status, attempt, reason, detail)
VALUES (%s, %s, %s, %s, %s, %s)
"""


class PgLedger:
    """The ``Ledger`` port on Postgres. Thread-safe (each call uses its own transaction)."""

    def __init__(self, db: Database, *, lease_seconds: float, prepared: bool = True) -> None:
        self._db = db
        self._lease_seconds = lease_seconds
        self._prepared = prepared  # server-side prepared statements (see ``prepared.py``)

    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        """See ``Ledger.claim``. The lease lasts ``lease_seconds`` on the database clock."""
        lease = uuid.uuid4().hex
        with self._db.autocommit() as cur:
            params = _claim_params(request, lease, self._lease_seconds)
            _CLAIM_STATEMENT.execute(cur, params, prepared=self._prepared)
            row = cur.fetchone()
            if row is None:
                return _refusal(cur, request)
        attempts, taken_over = row[0], row[1] == LedgerStatus.SENDING  # claimed from
        return Claim(request.request_id, lease, attempts, taken_over)

    def finish(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        """See ``Ledger.finish``. Writes nothing at all when the lease was lost."""
        params = _finish_params(claim, record)
        url = record.callback_url if record.callback is not None else None
        ids = (request.request_id, request.notification_id, request.correlation_id)
        params |= _outbox_params(ids, record.callback, _error(record.reason, record.detail), url)
        with self._db.autocommit() as cur:
            _FINISH_STATEMENT.execute(cur, params, prepared=self._prepared)
            row = cur.fetchone()
        if row is None or row[0] == 0:
            raise DeferredFailure(Reason.LEASE_LOST, "the lease was taken over")
        return None if row[1] is None else int(row[1])

    def reject(
        self,
        request_id: str,
        notification_id: str,
        correlation_id: str,
        reason: Reason,
        detail: str,
        callback_url: str | None,
    ) -> int | None:
        """See ``Ledger.reject``: creates a ``failed`` row only for an unknown ``request_id``
        (its payload hash stays '' so a later valid message with that id is not a conflict)."""
        with self._db.transaction() as cur:
            row = (request_id, notification_id, correlation_id, reason.value, detail or None)
            cur.execute(_REJECT, row)
            created = cur.rowcount == 1
            event = ("rejected", "failed" if created else None, None, reason.value, detail or None)
            cur.execute(_EVENT, (request_id, *event))
            if not created or not callback_url:
                return None
            ids = (request_id, notification_id, correlation_id)
            return _enqueue(cur, ids, CallbackStatus.FAILED, _error(reason, detail), callback_url)


_KEYS = {"request_id", "payload_hash", "notification_id", "correlation_id"}
_CLAIM_FIELDS = _KEYS | {"template_code", "batch_id", "recipient"}


def _claim_params(request: EmailRequest, lease: str, lease_seconds: float) -> dict[str, Any]:
    params = request.model_dump(include=_CLAIM_FIELDS)
    return {**params, "lease": lease, "lease_seconds": lease_seconds}


def _refusal(cur: cursor, request: EmailRequest) -> AlreadySent:
    """Explain a claim that returned no row: sent, conflicting, or leased by someone else."""
    cur.execute(
        "SELECT status, payload_hash, message_id FROM email_requests WHERE request_id = %s",
        (request.request_id,),
    )
    row = cur.fetchone()
    if row is None:  # pruned between the two statements: the next delivery claims it
        raise DeferredFailure(Reason.LEASE_BUSY, "the request changed during the claim")
    status, payload_hash, message_id = row
    if payload_hash not in ("", request.payload_hash):
        raise PermanentFailure(
            Reason.IDEMPOTENCY_CONFLICT, "request_id already used with a different payload"
        )
    if status == LedgerStatus.SENT:
        return AlreadySent(request.request_id, message_id)
    raise DeferredFailure(Reason.LEASE_BUSY, "another worker holds a live lease")


def _finish_params(claim: Claim, record: Record) -> dict[str, Any]:
    email = record.email
    return {
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
        "text": email.text if email else None,
        "html": email.html if email else None,
        "version": email.template_version if email else None,
    }


def _error(reason: Reason | None, detail: str) -> str | None:  # '<reason_code>: <detail>'
    if reason is None:
        return None
    return f"{reason.value}: {detail}" if detail else reason.value


def _enqueue(
    cur: cursor, ids: tuple[str, str, str], status: CallbackStatus, error: str | None, url: str
) -> int | None:
    """Insert an outbox row for ``ids`` (request, notification, correlation id) unless it would
    move the status backwards; supersede older waiting rows. Returns the new id or None."""
    cur.execute(_OUTBOX_AND_SUPERSEDE, _outbox_params(ids, status, error, url))
    row = cur.fetchone()
    return None if row is None else int(row[0])


def _outbox_params(
    ids: tuple[str, str, str], status: CallbackStatus | None, error: str | None, url: str | None
) -> dict[str, Any]:
    request_id, notification_id, correlation_id = ids
    return {
        # Stable per event: stored once. Only drawn when there is a callback to send.
        "webhook_id": f"msg_{secrets.token_hex(16)}" if url else None,
        "request_id": request_id,
        "notification_id": notification_id,
        "correlation_id": correlation_id,
        "cb_status": status.value if status else None,
        "cb_error": error if status != CallbackStatus.DELIVERED else None,
        "url": url or None,
        "grace": HANDOVER_GRACE_SECONDS,
    }


def get_request(db: Database, request_id: str) -> dict[str, Any] | None:
    """The ledger row of ``request_id`` as a dict of column → value, or None."""
    rows = _rows(db, "SELECT * FROM email_requests WHERE request_id = %s", request_id)
    return rows[0] if rows else None


def events(db: Database, request_id: str) -> list[dict[str, Any]]:
    """The audit trail of ``request_id``, oldest first."""
    return _rows(db, "SELECT * FROM email_events WHERE request_id = %s ORDER BY id", request_id)


def _rows(db: Database, query: str, request_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(query, (request_id,))
        names = [column.name for column in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
