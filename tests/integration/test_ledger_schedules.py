"""Held requests and cancels in the ledger, on a real Postgres (migration 006): a held request
is released once it is due and only then, once across concurrent releases, marked only after
its copy was published; a claim takes a held row back without spending an attempt and never
takes a cancelled one; a cancel decides every state as CONTRACT section 14 says, with its
callback in the same transaction; the status constraint takes the version-2 statuses."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

from email_worker.ledger.cancels import cancel_request
from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ledger.schedules import DueCopy, release_due
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record, RetryCopy
from schemas.callback import CallbackStatus
from schemas.failures import Reason
from schemas.request import EmailRequest
from tests.fakes import email_request

pytestmark = pytest.mark.integration

BODY = b'{"request_id": "r", "to": "ada@example.com", "template_code": "welcome"}'
PROPERTIES: dict[str, Any] = {"content_type": "application/json", "headers": {"x": "y"}}
URL = "http://gateway.test/api/v1/email/status/"
OTHER_URL = "http://other.test/status"


def claimed(book: PgLedger, request: EmailRequest) -> Claim:
    claim = book.claim(request)
    assert isinstance(claim, Claim)
    return claim


def held(db: Database, due_in: float = 3600.0) -> EmailRequest:
    """A request held until ``due_in`` seconds from now (negative: due already)."""
    book, request = PgLedger(db, lease_seconds=30), email_request()
    hold = Record(LedgerStatus.SCHEDULED, None, retry=RetryCopy(due_in, BODY, PROPERTIES))
    book.finish(claimed(book, request), request, hold)
    return request


def finished(db: Database, status: LedgerStatus, **fields: Any) -> EmailRequest:
    book, request = PgLedger(db, lease_seconds=30), email_request()
    record = Record(status, fields.pop("callback", None), callback_url=URL, **fields)
    book.finish(claimed(book, request), request, record)
    return request


def one(db: Database, sql: str, *args: Any) -> Any:
    with db.transaction() as cur:
        cur.execute(sql, args)
        found = cur.fetchone()
    return None if found is None else found[0] if len(found) == 1 else found


def ledger_row(db: Database, request_id: str) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM email_requests WHERE request_id = %s", (request_id,))
        names = [column.name for column in cur.description or ()]
        found = cur.fetchone()
    return dict(zip(names, found, strict=True)) if found else {}


def outbox(db: Database, request_id: str) -> list[tuple[Any, ...]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT notification_id, status, error, callback_url FROM callback_outbox"
            " WHERE request_id = %s ORDER BY id",
            (request_id,),
        )
        return list(cur.fetchall())


class Broker:
    """Stands in for the publisher: records each copy; ``refuse_after`` refuses from the n-th."""

    def __init__(self, refuse_after: int | None = None) -> None:
        self.copies: list[DueCopy] = []
        self.refuse_after = refuse_after

    def __call__(self, copy: DueCopy) -> bool:
        if self.refuse_after is not None and len(self.copies) >= self.refuse_after:
            return False
        self.copies.append(copy)
        return True


def test_a_held_request_is_released_only_once_due_and_then_marked_pending(db: Database) -> None:
    later, due = held(db, 3600), held(db, -1)
    broker = Broker()
    assert release_due(db, broker, 10) == (1, 1)
    (copy,) = broker.copies
    assert (copy.request_id, copy.body, copy.properties) == (due.request_id, BODY, PROPERTIES)
    assert copy.first_attempt_at is not None
    row = ledger_row(db, due.request_id)
    assert row["status"] == "pending" and bytes(row["retry_body"]) == BODY
    assert one(
        db, "SELECT retry_due_at <= now() FROM email_requests WHERE request_id = %s", due.request_id
    )
    assert row["attempts"] == 0  # the hold's claim spent nothing
    events = one(
        db,
        "SELECT array_agg(event ORDER BY id) FROM email_events WHERE request_id = %s",
        due.request_id,
    )
    assert events[-1] == "released"
    assert ledger_row(db, later.request_id)["status"] == "scheduled"
    assert release_due(db, Broker(), 10) == (0, 0)  # released once
    claim = claimed(PgLedger(db, lease_seconds=30), due)
    assert claim.attempt == 1


def test_a_refused_publish_stops_the_batch_and_the_rest_stays_held(db: Database) -> None:
    requests = [held(db, -3), held(db, -2), held(db, -1)]
    assert release_due(db, Broker(refuse_after=1), 10) == (3, 1)
    statuses = [ledger_row(db, r.request_id)["status"] for r in requests]
    assert statuses == ["pending", "scheduled", "scheduled"]  # oldest due first


def test_a_failure_before_the_commit_marks_nothing_and_the_copy_goes_again(db: Database) -> None:
    request = held(db, -1)
    published: list[str] = []

    def crash(copy: DueCopy) -> bool:
        published.append(copy.request_id)
        raise RuntimeError("the process died after the confirm")

    with pytest.raises(RuntimeError):
        release_due(db, crash, 10)
    assert ledger_row(db, request.request_id)["status"] == "scheduled"
    broker = Broker()
    assert release_due(db, broker, 10) == (1, 1)  # published a second time: idempotency holds
    assert published + [c.request_id for c in broker.copies] == [request.request_id] * 2


def test_concurrent_releases_never_take_the_same_row(db: Database) -> None:
    request = held(db, -1)
    inside, go_on = threading.Event(), threading.Event()
    first: list[tuple[int, int]] = []

    def slow(copy: DueCopy) -> bool:
        inside.set()
        return go_on.wait(20)

    thread = threading.Thread(target=lambda: first.append(release_due(db, slow, 10)))
    thread.start()
    assert inside.wait(20)
    second = Broker()
    assert release_due(db, second, 10) == (0, 0)  # the row is locked: skipped, not waited for
    go_on.set()
    thread.join(20)
    assert first == [(1, 1)] and second.copies == []
    assert ledger_row(db, request.request_id)["status"] == "pending"


def test_a_held_row_is_claimed_again_without_spending_an_attempt(db: Database) -> None:
    request = held(db)  # the gateway published it again, say
    claim = claimed(PgLedger(db, lease_seconds=30), request)
    assert claim.attempt == 1
    row = ledger_row(db, request.request_id)
    assert (row["status"], row["claimed_from"], row["retry_body"]) == ("sending", "scheduled", None)


def test_unknown_is_refused_unless_unseen_which_cancels_ahead_of_arrival(db: Database) -> None:
    result = cancel_request(db, "never-seen", detail="by a test", callback_url=URL)
    assert (result.outcome, result.done, result.outbox_id) == ("unknown", False, None)
    assert "--unseen" in result.explanation
    assert ledger_row(db, "never-seen") == {}
    result = cancel_request(db, "still-queued", detail="by a test", callback_url=URL, unseen=True)
    assert (result.outcome, result.previous, result.done) == ("cancelled", None, True)
    assert result.outbox_id is not None
    assert outbox(db, "still-queued") == [("still-queued", "failed", "cancelled: by a test", URL)]
    arriving = email_request("still-queued")
    answer = PgLedger(db, lease_seconds=30).claim(arriving)
    assert answer == AlreadySent("still-queued", None, outcome="cancelled")


def test_a_held_request_is_cancelled_its_copy_dropped_and_never_released(db: Database) -> None:
    request = held(db, -1)
    result = cancel_request(db, request.request_id, detail="by a test", callback_url=URL)
    assert (result.outcome, result.previous) == ("cancelled", "scheduled")
    row = ledger_row(db, request.request_id)
    assert (row["status"], row["failure_reason"], row["retry_body"]) == (
        "failed",
        "cancelled",
        None,
    )
    assert outbox(db, request.request_id) == [
        (request.notification_id, "failed", "cancelled: by a test", URL)
    ]
    assert release_due(db, Broker(), 10) == (0, 0)
    answer = PgLedger(db, lease_seconds=30).claim(request)
    assert isinstance(answer, AlreadySent) and answer.outcome == "cancelled"
    again = cancel_request(db, request.request_id, detail="again", callback_url=URL)
    assert (again.outcome, again.done, again.outbox_id) == ("already_cancelled", True, None)
    assert len(outbox(db, request.request_id)) == 1  # no second callback


def test_a_pending_retry_is_cancelled_to_its_earlier_callback_url(db: Database) -> None:
    request = finished(
        db, LedgerStatus.PENDING, callback=CallbackStatus.PENDING, reason=Reason.SMTP_TRANSIENT
    )
    result = cancel_request(db, request.request_id, detail="by a test", callback_url=OTHER_URL)
    assert (result.outcome, result.previous) == ("cancelled", "pending")
    assert outbox(db, request.request_id)[-1] == (
        request.notification_id,
        "failed",
        "cancelled: by a test",
        URL,
    )


@pytest.mark.parametrize(
    ("status", "fields", "words"),
    [
        (LedgerStatus.SENT, {"callback": CallbackStatus.DELIVERED}, "already sent"),
        (LedgerStatus.UNKNOWN, {"callback": CallbackStatus.PENDING}, "may already be delivered"),
        (
            LedgerStatus.FAILED,
            {"callback": CallbackStatus.FAILED, "reason": Reason.EXPIRED},
            "already failed (expired)",
        ),
    ],
)
def test_sent_maybe_sent_and_failed_requests_are_refused(
    db: Database, status: LedgerStatus, fields: dict[str, Any], words: str
) -> None:
    request = finished(db, status, **fields)
    before = outbox(db, request.request_id)
    result = cancel_request(db, request.request_id, detail="by a test", callback_url=URL)
    assert (result.outcome, result.previous, result.done) == ("refused", status.value, False)
    assert words in result.explanation
    assert ledger_row(db, request.request_id)["status"] == status.value
    assert outbox(db, request.request_id) == before


def test_a_request_in_flight_is_refused(db: Database) -> None:
    book, request = PgLedger(db, lease_seconds=30), email_request()
    claim = claimed(book, request)
    result = cancel_request(db, request.request_id, detail="by a test", callback_url=URL)
    assert (result.outcome, result.previous) == ("refused", "sending")
    assert "in flight" in result.explanation
    book.finish(claim, request, Record(LedgerStatus.SENT, CallbackStatus.DELIVERED))
    assert ledger_row(db, request.request_id)["status"] == "sent"


def test_the_status_constraint_takes_the_version_2_statuses_only(db: Database) -> None:
    request = finished(db, LedgerStatus.SENT)
    for status in ("bounced", "complained", "scheduled"):
        with db.transaction() as cur:
            cur.execute(
                "UPDATE email_requests SET status = %s WHERE request_id = %s",
                (status, request.request_id),
            )
    with pytest.raises(psycopg2.errors.CheckViolation), db.transaction() as cur:
        cur.execute(
            "UPDATE email_requests SET status = 'lost' WHERE request_id = %s",
            (request.request_id,),
        )
