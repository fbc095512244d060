"""The idempotency ledger in Postgres: who owns a request, what became of it, and its audit trail.

``PgLedger`` implements the ``Ledger`` port (RELIABILITY rules 7-9). A claim is an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that either wins a lease or returns no row; every
later write is fenced by the lease token, so a worker whose lease was taken over writes
nothing. Leases use the database clock only. Each status change appends to ``email_events``
and, when a callback is due, inserts its ``callback_outbox`` row in the same statement.
Claims (and outcomes) that threads make at the same time share one statement and one commit
(group commit, ``group_commit.py``); each request keeps its own lease, fence and result. The
statements are functions created by migrations ``002_batched_ledger`` and
``003_redeliveries_and_retry_copies`` (called from ``ledger_sql.py``). The claim also counts
deliveries that died without an outcome (the crash-loop guard, ``MAX_DELIVERIES``), and an
outcome that schedules a retry keeps the message so beat can re-drive a copy the broker lost.
No transaction or row lock is held beyond the ledger's own statements. The maintenance
``email-worker beat`` runs on these tables lives in ``maintenance.py``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from psycopg2 import errors
from psycopg2.extensions import cursor

from email_worker.ledger.db import Database
from email_worker.ledger.group_commit import GroupCommit
from email_worker.ledger.statements import (
    ENQUEUE_CALLBACK,
    EVENT,
    REJECT,
    Outcome,
    claim_rows,
    claim_statement,
    error_text,
    finish_rows,
    finish_statement,
    outbox_params,
    tokens,
    traceparents,
)
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record, SuppressionCheck
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
# MAX_DELIVERIES: more redeliveries than this without an outcome (a crash loop) fail the request.
MAX_DELIVERIES = 5

_T = TypeVar("_T")


class PgLedger:
    """The ``Ledger`` port on Postgres. Thread-safe: each batch uses its own pooled connection,
    and concurrent ``claim`` (or ``finish``) calls share one statement (``group_commit.py``)."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        max_deliveries: int = MAX_DELIVERIES,
        observe_batch: Callable[[str, int], object] | None = None,
        check_suppressions: bool = False,
    ) -> None:
        """``observe_batch(statement, size)`` is told the size of every shared statement
        (``claim`` or ``finish``). A claim that finds more than ``max_deliveries``
        redeliveries without an outcome carries ``PermanentFailure(REDELIVERY_LIMIT)``.
        With ``check_suppressions`` (migration 007 applied) the claim statement also reads
        the suppression list for the message's own address (``Claim.suppression``)."""
        self._db = db
        self._check_suppressions = check_suppressions
        self._lease_seconds = lease_seconds
        self._max_deliveries = max_deliveries
        observe = observe_batch or (lambda statement, size: None)
        self._claims: GroupCommit[EmailRequest, Claim | AlreadySent] = GroupCommit(
            lambda batch: self.claim_many(batch, lock_timeout_ms=GROUP_LOCK_TIMEOUT_MS),
            max_batch=MAX_BATCH,
            alone=self.claim_many,
            observe=lambda size: observe("claim", size),
        )
        self._finishes: GroupCommit[Outcome, int | None] = GroupCommit(
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

    def _claimed(self, request: EmailRequest, lease: str, row: tuple[Any, ...]) -> Claim:
        """The ``Claim`` a row of ``ew_claim_batch2`` makes, classified by its delivery count
        (this claim included: ``deliveries - 1`` redeliveries died without an outcome)."""
        _, attempts, claimed_from, deliveries = row[:4]
        failure = None
        if deliveries - 1 > self._max_deliveries:
            failure = PermanentFailure(
                Reason.REDELIVERY_LIMIT,
                f"redelivered {deliveries - 1} times without an outcome (limit "
                f"{self._max_deliveries}): the worker died holding it each time",
            )
        taken_over = claimed_from == LedgerStatus.SENDING
        return Claim(request.request_id, lease, attempts, taken_over, deliveries, failure)

    def claim_many(
        self, requests: Sequence[EmailRequest], *, lock_timeout_ms: int | None = None
    ) -> list[Claim | AlreadySent | WorkerFailure]:
        """``claim`` for each request, in order, with the error ``claim`` would raise as the
        item's value: one checkout, one statement (plus one read per refused request). With
        ``lock_timeout_ms``, a statement blocked longer by another transaction's row lock
        claims nothing and raises ``DeferredFailure``."""
        order = _by_request_id([request.request_id for request in requests])
        batch = [requests[i] for i in order]
        leases = tokens(len(batch))
        statement, keys = claim_statement(batch, checked=self._check_suppressions)
        params = {
            "batch": claim_rows(batch, leases),
            "lease_seconds": self._lease_seconds,
            "lock_timeout": _lock_timeout(lock_timeout_ms),
            "hashes": keys,
        }
        done: dict[int, Claim | AlreadySent | WorkerFailure] = {}
        try:
            with self._db.autocommit() as cur:
                cur.execute(statement, params)
                for row in cur.fetchall():
                    k = row[0] - 1  # pos
                    claim = self._claimed(batch[k], leases[k], row)
                    if keys is not None and keys[k] is not None:  # read with the claim
                        checked = SuppressionCheck(str(batch[k].recipient), row[4])
                        claim = replace(claim, suppression=checked)
                    done[k] = claim
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
        self, outcomes: Sequence[Outcome], *, lock_timeout_ms: int | None = None
    ) -> list[int | WorkerFailure | None]:
        """``finish`` for each (claim, request, record), in order, with the error ``finish``
        would raise as the item's value. Each row is fenced by its own lease. ``lock_timeout_ms``
        as for ``claim_many`` (nothing is written then)."""
        order = _by_request_id([claim.request_id for claim, _, _ in outcomes])
        batch = [outcomes[i] for i in order]
        params = {
            "batch": finish_rows(batch),
            "grace": HANDOVER_GRACE_SECONDS,
            "lock_timeout": _lock_timeout(lock_timeout_ms),
            "traceparents": traceparents(batch),  # None with tracing off
        }
        try:
            with self._db.autocommit() as cur:
                cur.execute(finish_statement(params["traceparents"] is not None), params)
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
            error = error_text(reason, detail)
            return _enqueue(cur, ids, CallbackStatus.FAILED, error, callback_url)


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
    """Why a claim returned no row: sent, cancelled, conflicting, or leased by someone else
    (the error ``claim`` raises, as a value)."""
    cur.execute(
        "SELECT status, payload_hash, message_id, failure_reason FROM email_requests"
        " WHERE request_id = %s",
        (request.request_id,),
    )
    row = cur.fetchone()
    if row is None:  # pruned between the two statements: the next delivery claims it
        return DeferredFailure(Reason.LEASE_BUSY, "the request changed during the claim")
    status, payload_hash, message_id, failure_reason = row
    # Cancelled before it was sent (CONTRACT 14): acked, never sent, whatever payload it has.
    if status == LedgerStatus.FAILED and failure_reason == Reason.CANCELLED:
        return AlreadySent(request.request_id, message_id, outcome="cancelled")
    if payload_hash not in ("", request.payload_hash):
        return PermanentFailure(
            Reason.IDEMPOTENCY_CONFLICT, "request_id already used with a different payload"
        )
    # Bounced or complained after it was sent (CONTRACT 15): sent once, never again.
    if status in (LedgerStatus.SENT, LedgerStatus.BOUNCED, LedgerStatus.COMPLAINED):
        return AlreadySent(request.request_id, message_id)
    return DeferredFailure(Reason.LEASE_BUSY, "another worker holds a live lease")


def _enqueue(
    cur: cursor, ids: tuple[str, str, str], status: CallbackStatus, error: str | None, url: str
) -> int | None:
    """Insert an outbox row for ``ids`` (request, notification, correlation id) unless it would
    move the status backwards; supersede older waiting rows. Returns the new id or None."""
    params = outbox_params(ids, status, error, url) | {"grace": HANDOVER_GRACE_SECONDS}
    cur.execute(ENQUEUE_CALLBACK, params)
    row = cur.fetchone()
    return None if row is None else int(row[0])


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
