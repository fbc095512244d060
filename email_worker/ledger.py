"""The idempotency ledger in Postgres: who owns a request, what became of it, and its audit trail.

``PgLedger`` implements the ``Ledger`` port (RELIABILITY rules 7-9). A claim is an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that either wins a lease or returns no row; every
later write is fenced by the lease token, so a worker whose lease was taken over writes
nothing. Leases use the database clock only. Each status change appends to ``email_events``
and, when a callback is due, inserts its ``callback_outbox`` row in the same statement.
Claims (and outcomes) that threads make at the same time share one statement and one commit
(group commit, ``group_commit.py``); each request keeps its own lease, fence and result. The
statements are functions created by migration ``002_batched_ledger`` (called from
``ledger_sql.py``). No transaction or row lock is held beyond the ledger's own statements.
The maintenance ``email-worker beat`` runs on these tables lives in ``maintenance.py``."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from psycopg2 import errors
from psycopg2.extensions import cursor

from email_worker.db import Database
from email_worker.group_commit import GroupCommit
from email_worker.ledger_sql import CLAIM_MANY, ENQUEUE_CALLBACK, EVENT, FINISH_MANY, REJECT
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record
from schemas.callback import CallbackStatus
from schemas.failures import DeferredFailure, PermanentFailure, Reason, WorkerFailure
from schemas.request import EmailRequest

# A new outbox row waits this long before beat's re-drive may pick it up, so the immediate
# hand-over (which may claim a never-attempted row at once) does not race beat.
HANDOVER_GRACE_SECONDS = 30.0

# Concurrent claims (and outcomes) of one process share a statement, up to this many each.
MAX_BATCH = 64
# A shared statement waits this long for a row lock that another transaction holds; then its
# requests run again one by one, each in its own thread, and only the blocked one waits.
GROUP_LOCK_TIMEOUT_MS = 100

_Outcome = tuple[Claim, EmailRequest, Record]  # what ``finish`` writes
_T = TypeVar("_T")


class PgLedger:
    """The ``Ledger`` port on Postgres. Thread-safe: each batch uses its own pooled connection,
    and concurrent ``claim`` (or ``finish``) calls share one statement (``group_commit.py``)."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        prepared: bool = True,
        observe_batch: Callable[[str, int], object] | None = None,
    ) -> None:
        """``observe_batch(statement, size)`` is told the size of every shared statement
        (``claim`` or ``finish``)."""
        self._db = db
        self._lease_seconds = lease_seconds
        self._prepared = prepared  # server-side prepared statements (see ``prepared.py``)
        observe = observe_batch or (lambda statement, size: None)
        self._claims: GroupCommit[EmailRequest, Claim | AlreadySent] = GroupCommit(
            lambda batch: self.claim_many(batch, lock_timeout_ms=GROUP_LOCK_TIMEOUT_MS),
            max_batch=MAX_BATCH,
            alone=self.claim_many,
            observe=lambda size: observe("claim", size),
        )
        self._finishes: GroupCommit[_Outcome, int | None] = GroupCommit(
            lambda batch: self.finish_many(batch, lock_timeout_ms=GROUP_LOCK_TIMEOUT_MS),
            max_batch=MAX_BATCH,
            alone=self.finish_many,
            observe=lambda size: observe("finish", size),
        )

    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        """See ``Ledger.claim``. The lease lasts ``lease_seconds`` on the database clock."""
        return self._claims.submit(request)

    def finish(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        """See ``Ledger.finish``. Writes nothing at all when the lease was lost."""
        return self._finishes.submit((claim, request, record))

    def claim_many(
        self, requests: Sequence[EmailRequest], *, lock_timeout_ms: int | None = None
    ) -> list[Claim | AlreadySent | WorkerFailure]:
        """``claim`` for each request, in order, with the error ``claim`` would raise as the
        item's value: one checkout, one statement (plus one read per refused request). With
        ``lock_timeout_ms``, a statement blocked longer by another transaction's row lock
        claims nothing and raises ``DeferredFailure``."""
        order = _by_request_id([request.request_id for request in requests])
        batch = [requests[i] for i in order]
        leases = [uuid.uuid4().hex for _ in batch]
        params = {
            "batch": _claim_batch(batch, leases),
            "lease_seconds": self._lease_seconds,
            "lock_timeout": _lock_timeout(lock_timeout_ms),
        }
        done: dict[int, Claim | AlreadySent | WorkerFailure] = {}
        try:
            with self._db.autocommit() as cur:
                CLAIM_MANY.execute(cur, params, prepared=self._prepared)
                for pos, attempts, claimed_from in cur.fetchall():
                    request = batch[pos - 1]
                    taken_over = claimed_from == LedgerStatus.SENDING
                    done[pos - 1] = Claim(request.request_id, leases[pos - 1], attempts, taken_over)
                for k, request in enumerate(batch):
                    if k not in done:
                        done[k] = _refusal(cur, request)
        except DeferredFailure as down:  # the database failed; the claims made so far stand
            if _blocked(down):
                raise
            for k in range(len(batch)):
                done.setdefault(k, _copy(down))
        return _in_order(order, [done[k] for k in range(len(batch))])

    def finish_many(
        self, outcomes: Sequence[_Outcome], *, lock_timeout_ms: int | None = None
    ) -> list[int | WorkerFailure | None]:
        """``finish`` for each (claim, request, record), in order, with the error ``finish``
        would raise as the item's value. Each row is fenced by its own lease. ``lock_timeout_ms``
        as for ``claim_many`` (nothing is written then)."""
        order = _by_request_id([claim.request_id for claim, _, _ in outcomes])
        params = {
            "batch": _finish_batch([outcomes[i] for i in order]),
            "grace": HANDOVER_GRACE_SECONDS,
            "lock_timeout": _lock_timeout(lock_timeout_ms),
        }
        try:
            with self._db.autocommit() as cur:
                FINISH_MANY.execute(cur, params, prepared=self._prepared)
                written = {pos - 1: outbox_id for pos, outbox_id in cur}
        except DeferredFailure as down:
            if _blocked(down):
                raise
            return [_copy(down) for _ in outcomes]
        done = [_written(written, k) for k in range(len(order))]
        return _in_order(order, done)

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
            cur.execute(REJECT, row)
            created = cur.rowcount == 1
            event = ("rejected", "failed" if created else None, None, reason.value, detail or None)
            cur.execute(EVENT, (request_id, *event))
            if not created or not callback_url:
                return None
            ids = (request_id, notification_id, correlation_id)
            return _enqueue(cur, ids, CallbackStatus.FAILED, _error(reason, detail), callback_url)


def _claim_batch(batch: Sequence[EmailRequest], leases: list[str]) -> str:
    """The JSON rows ``ew_claim_many`` reads, ``pos`` counted from 1."""
    return _json(
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


def _json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


def _by_request_id(request_ids: list[str]) -> list[int]:
    """Positions in request_id order: concurrent batches then lock shared rows in one order."""
    return sorted(range(len(request_ids)), key=request_ids.__getitem__)


def _in_order(order: list[int], results: list[_T]) -> list[_T]:
    """``results`` (in ``order``) put back in the caller's order."""
    placed = dict(zip(order, results, strict=True))
    return [placed[position] for position in range(len(order))]


def _written(written: dict[int, int | None], k: int) -> int | WorkerFailure | None:
    """What ``finish`` returns for the k-th outcome: its outbox id, or the lost lease."""
    if k not in written:
        return DeferredFailure(Reason.LEASE_LOST, "the lease was taken over")
    outbox_id = written[k]
    return None if outbox_id is None else int(outbox_id)


def _lock_timeout(milliseconds: int | None) -> str | None:
    """The statement's ``lock_timeout``; None keeps the session's (the database's own setting)."""
    return None if milliseconds is None else f"{milliseconds}ms"


def _blocked(failure: DeferredFailure) -> bool:
    """The statement gave up waiting for a row lock (``lock_timeout``), not the database."""
    return isinstance(failure.__cause__, errors.LockNotAvailable)


def _copy(failure: DeferredFailure) -> DeferredFailure:
    """One error object per waiting thread: each raises its own (tracebacks are per object)."""
    return type(failure)(failure.reason, failure.detail)


def _refusal(cur: cursor, request: EmailRequest) -> AlreadySent | WorkerFailure:
    """Why a claim returned no row: sent, conflicting, or leased by someone else (the error
    ``claim`` raises, as a value)."""
    cur.execute(
        "SELECT status, payload_hash, message_id FROM email_requests WHERE request_id = %s",
        (request.request_id,),
    )
    row = cur.fetchone()
    if row is None:  # pruned between the two statements: the next delivery claims it
        return DeferredFailure(Reason.LEASE_BUSY, "the request changed during the claim")
    status, payload_hash, message_id = row
    if payload_hash not in ("", request.payload_hash):
        return PermanentFailure(
            Reason.IDEMPOTENCY_CONFLICT, "request_id already used with a different payload"
        )
    if status == LedgerStatus.SENT:
        return AlreadySent(request.request_id, message_id)
    return DeferredFailure(Reason.LEASE_BUSY, "another worker holds a live lease")


def _finish_batch(outcomes: Sequence[_Outcome]) -> str:
    """The JSON rows ``ew_finish_many`` reads, ``pos`` counted from 1."""
    return _json(_finish_row(*outcome) | {"pos": k} for k, outcome in enumerate(outcomes, start=1))


def _finish_row(claim: Claim, request: EmailRequest, record: Record) -> dict[str, Any]:
    email = record.email
    url = record.callback_url if record.callback is not None else None
    ids = (request.request_id, request.notification_id, request.correlation_id)
    return _outbox_params(ids, record.callback, _error(record.reason, record.detail), url) | {
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


def _error(reason: Reason | None, detail: str) -> str | None:  # '<reason_code>: <detail>'
    if reason is None:
        return None
    return f"{reason.value}: {detail}" if detail else reason.value


def _enqueue(
    cur: cursor, ids: tuple[str, str, str], status: CallbackStatus, error: str | None, url: str
) -> int | None:
    """Insert an outbox row for ``ids`` (request, notification, correlation id) unless it would
    move the status backwards; supersede older waiting rows. Returns the new id or None."""
    params = _outbox_params(ids, status, error, url) | {"grace": HANDOVER_GRACE_SECONDS}
    cur.execute(ENQUEUE_CALLBACK, params)
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
