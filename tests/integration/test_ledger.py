"""The Postgres ledger against a real Postgres: migrations, claims, leases, fencing, the audit
trail, the outbox written with the status, and maintenance."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

from email_worker.ledger import maintenance
from email_worker.ledger import pg_ledger as ledger
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import (
    SchemaBehind,
    available,
    check_applied,
    get_or_create_secret,
    migrate,
)
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record, RenderedEmail
from schemas.callback import CallbackStatus
from schemas.failures import DeferredFailure, PermanentFailure, Reason
from schemas.request import EmailRequest
from tests.fakes import email_request

pytestmark = pytest.mark.integration

URL = "http://gateway.test/api/v1/email/status/"
SHIPPED = [version for version, _ in available()]
EMAIL = RenderedEmail(
    subject="Welcome",
    html="<p>Hi Ada</p>",
    text="Hi Ada",
    template_code="welcome",
    template_version="3",
)


def sent(callback_url: str | None = URL) -> Record:
    return Record(
        status=LedgerStatus.SENT,
        callback=CallbackStatus.DELIVERED,
        recipient="ada@example.com",
        message_id="<abc@example.com>",
        smtp_reply="250 2.0.0 queued",
        email=EMAIL,
        callback_url=callback_url,
    )


def outcome(status: LedgerStatus, callback: CallbackStatus | None, reason: Reason) -> Record:
    return Record(status=status, callback=callback, reason=reason, detail="why", callback_url=URL)


def query(db: Database, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with db.transaction() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def outbox(db: Database, request_id: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT status, state, error, webhook_id, next_attempt_at - created_at"
        " FROM callback_outbox WHERE request_id = %s ORDER BY id",
        request_id,
    )


def must_claim(result: Claim | AlreadySent) -> Claim:
    assert isinstance(result, Claim)
    return result


def test_migrate_is_idempotent_and_creates_a_stable_secret(db: Database) -> None:
    assert migrate(db) == []
    versions = query(db, "SELECT version FROM schema_migrations ORDER BY version")
    assert [version for (version,) in versions] == SHIPPED
    assert SHIPPED[:3] == ["001_init", "002_batched_ledger", "003_redeliveries_and_retry_copies"]
    secret = get_or_create_secret(db, "message_id_secret")
    assert len(secret) == 32
    assert get_or_create_secret(db, "message_id_secret") == secret


def test_a_database_without_the_redelivery_columns_is_behind(db: Database) -> None:
    # `email-worker run` exits 4 on SchemaBehind: a worker of this version needs 003's
    # columns and functions for every claim.
    check_applied(db)
    query(db, "DELETE FROM schema_migrations WHERE version = '003_redeliveries_and_retry_copies'")
    with pytest.raises(SchemaBehind, match="003_redeliveries_and_retry_copies"):
        check_applied(db)


def test_migrate_concurrently_applies_once(database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        database = Database(database_url, pool_size=1)
        try:
            barrier.wait()
            results.append(migrate(database))
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [[], SHIPPED]


def test_exactly_one_of_eight_concurrent_claims_wins(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    barrier = threading.Barrier(8)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(book.claim(request))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claims = [r for r in results if isinstance(r, Claim)]
    busy = [r for r in results if isinstance(r, DeferredFailure)]
    assert len(claims) == 1 and claims[0].attempt == 1 and not claims[0].taken_over
    assert len(busy) == 7 and {b.reason for b in busy} == {Reason.LEASE_BUSY}
    assert [e["event"] for e in ledger.events(db, request.request_id)] == ["claimed"]


def test_sent_request_is_acknowledged_as_duplicate_and_never_reclaimed(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    book.finish(claim, request, sent())

    assert book.claim(request) == AlreadySent(request.request_id, "<abc@example.com>")
    with pytest.raises(DeferredFailure) as lost:  # the old lease cannot rewrite it either
        book.finish(
            claim,
            request,
            outcome(LedgerStatus.FAILED, CallbackStatus.FAILED, Reason.MESSAGE_REJECTED),
        )
    assert lost.value.reason == Reason.LEASE_LOST
    assert book.reject(request.request_id, "n", "c", Reason.INVALID_MESSAGE, "x", URL) is None
    row = ledger.get_request(db, request.request_id)
    assert row is not None and row["status"] == "sent" and row["attempts"] == 1


def test_stored_record_holds_the_rendered_email_and_utc_times(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    book.finish(claim, request, sent())
    row = ledger.get_request(db, request.request_id)
    assert row is not None
    assert (row["subject"], row["text_body"], row["html_body"]) == (
        "Welcome",
        "Hi Ada",
        "<p>Hi Ada</p>",
    )
    assert row["message_id"] == "<abc@example.com>"
    assert row["smtp_reply"] == "250 2.0.0 queued"
    assert row["template_version"] == "3" and row["batch_id"] == "batch-7"
    assert row["lease_owner"] is None and row["lease_expires_at"] is None
    for column in ("created_at", "updated_at", "first_attempt_at", "sent_at"):
        assert row[column].utcoffset() == timedelta(0), column
    history = ledger.events(db, request.request_id)
    assert [(e["event"], e["status"], e["attempt"]) for e in history] == [
        ("claimed", "sending", 1),
        ("sent", "sent", 1),
    ]


def test_same_id_with_another_payload_is_a_conflict(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    other = email_request(request.request_id, payload_hash="hash-2")
    with pytest.raises(PermanentFailure) as while_sending:
        book.claim(other)
    book.finish(claim, request, sent())
    with pytest.raises(PermanentFailure) as after_sent:
        book.claim(other)
    assert while_sending.value.reason == after_sent.value.reason == Reason.IDEMPOTENCY_CONFLICT


def test_expired_lease_is_taken_over_and_the_old_worker_is_fenced(db: Database) -> None:
    book = PgLedger(db, lease_seconds=0.2)
    request = email_request()
    first = must_claim(book.claim(request))
    time.sleep(0.3)
    second = must_claim(book.claim(request))
    assert second.taken_over and second.attempt == 2 and second.lease != first.lease

    with pytest.raises(DeferredFailure) as lost:
        book.finish(first, request, sent())
    assert lost.value.reason == Reason.LEASE_LOST
    row = ledger.get_request(db, request.request_id)
    assert row is not None
    assert (row["status"], row["lease_owner"], row["message_id"]) == ("sending", second.lease, None)
    assert outbox(db, request.request_id) == []  # no callback from the fenced write
    assert [e["event"] for e in ledger.events(db, request.request_id)] == ["claimed", "taken_over"]


def test_live_lease_is_not_taken(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    must_claim(book.claim(request))
    with pytest.raises(DeferredFailure) as busy:
        book.claim(request)
    assert busy.value.reason == Reason.LEASE_BUSY


@pytest.mark.parametrize(
    ("status", "callback"),
    [
        (LedgerStatus.FAILED, CallbackStatus.FAILED),
        (LedgerStatus.UNKNOWN, None),
        (LedgerStatus.PENDING, CallbackStatus.PENDING),
    ],
)
def test_failed_unknown_and_pending_are_claimable_again(
    db: Database, status: LedgerStatus, callback: CallbackStatus | None
) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    first = must_claim(book.claim(request))
    book.finish(first, request, outcome(status, callback, Reason.SMTP_UNKNOWN))
    again = must_claim(book.claim(request))
    assert again.attempt == 2 and not again.taken_over
    row = ledger.get_request(db, request.request_id)
    assert row is not None and row["status"] == "sending" and row["claimed_from"] == status


def test_events_are_append_only(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    must_claim(book.claim(request))
    with pytest.raises(psycopg2.errors.RestrictViolation):
        query(db, "UPDATE email_events SET detail = 'rewritten'")
    with pytest.raises(psycopg2.errors.RestrictViolation):
        query(db, "TRUNCATE email_events")
    query(db, "DELETE FROM email_events WHERE request_id = %s", request.request_id)
    assert ledger.events(db, request.request_id) == []


def test_outbox_row_is_written_with_the_status(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    outbox_id = book.finish(claim, request, sent())
    assert isinstance(outbox_id, int)
    [(status, state, error, webhook_id, grace)] = outbox(db, request.request_id)
    assert (status, state, error) == ("delivered", "pending", None)
    assert webhook_id.startswith("msg_") and len(webhook_id) > 20
    assert timedelta(seconds=29) < grace < timedelta(seconds=31)  # the hand-over grace


def test_status_and_outbox_row_commit_or_fail_together(db: Database) -> None:
    query(
        db,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$",
    )
    query(
        db,
        "CREATE TRIGGER refuse BEFORE INSERT ON callback_outbox"
        " FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    with pytest.raises(psycopg2.errors.RaiseException):
        book.finish(claim, request, sent())
    row = ledger.get_request(db, request.request_id)
    assert row is not None
    assert (row["status"], row["lease_owner"], row["message_id"]) == ("sending", claim.lease, None)
    assert [e["event"] for e in ledger.events(db, request.request_id)] == ["claimed"]


def test_no_outbox_row_without_a_callback_url(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    assert book.finish(claim, request, sent(callback_url=None)) is None
    assert outbox(db, request.request_id) == []


def finish_with(book: PgLedger, request: EmailRequest, record: Record) -> int | None:
    return book.finish(must_claim(book.claim(request)), request, record)


def test_callbacks_never_move_backwards(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    pending = outcome(LedgerStatus.PENDING, CallbackStatus.PENDING, Reason.SMTP_TRANSIENT)
    failed = outcome(LedgerStatus.FAILED, CallbackStatus.FAILED, Reason.RETRIES_EXHAUSTED)
    assert finish_with(book, request, pending) is not None
    assert finish_with(book, request, failed) is not None
    assert finish_with(book, request, pending) is None  # no pending after failed
    assert finish_with(book, request, sent()) is not None  # a replay may still deliver
    rows = outbox(db, request.request_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("pending", "superseded", "smtp_transient: why"),
        ("failed", "superseded", "retries_exhausted: why"),
        ("delivered", "pending", None),
    ]


def test_reject_records_unknown_ids_only(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    outbox_id = book.reject("bad-1", "n-bad", "c-bad", Reason.INVALID_MESSAGE, "no template", URL)
    assert isinstance(outbox_id, int)
    row = ledger.get_request(db, "bad-1")
    assert row is not None and (row["status"], row["failure_reason"]) == (
        "failed",
        "invalid_message",
    )
    assert [r[:3] for r in outbox(db, "bad-1")] == [
        ("failed", "pending", "invalid_message: no template")
    ]

    request = email_request()
    claim = must_claim(book.claim(request))
    assert book.reject(request.request_id, "n", "c", Reason.IDEMPOTENCY_CONFLICT, "", URL) is None
    row = ledger.get_request(db, request.request_id)
    assert row is not None and row["status"] == "sending" and row["lease_owner"] == claim.lease
    assert [e["event"] for e in ledger.events(db, request.request_id)] == ["claimed", "rejected"]
    assert outbox(db, request.request_id) == []


def test_a_rejected_id_can_later_be_claimed_with_a_valid_payload(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    book.reject("late-fix", "n", "c", Reason.INVALID_MESSAGE, "", None)
    claim = must_claim(book.claim(email_request("late-fix")))
    assert claim.attempt == 1


def test_expire_leases_marks_silent_leases_unknown(db: Database) -> None:
    book = PgLedger(db, lease_seconds=0.2)
    request, live = email_request(), email_request()
    claim = must_claim(book.claim(request))
    time.sleep(0.3)
    PgLedger(db, lease_seconds=30).claim(live)
    assert maintenance.expire_leases(db, grace_seconds=0) == 1
    assert maintenance.expire_leases(db, grace_seconds=0) == 0
    row = ledger.get_request(db, request.request_id)
    assert row is not None and row["status"] == "unknown"
    assert ledger.events(db, request.request_id)[-1]["event"] == "lease_expired"
    # Nobody took it over: the late worker may still record what really happened.
    assert book.finish(claim, request, sent()) is not None
    row = ledger.get_request(db, request.request_id)
    assert row is not None and row["status"] == "sent"


def test_prune_deletes_old_finished_requests_only(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    old, recent, stuck = email_request(), email_request(), email_request()
    finish_with(book, old, sent())
    finish_with(book, recent, sent())
    must_claim(book.claim(stuck))
    query(db, "UPDATE callback_outbox SET state = 'delivered'")
    query(
        db,
        "UPDATE email_requests SET updated_at = now() - interval '40 days'"
        " WHERE request_id IN (%s, %s)",
        old.request_id,
        stuck.request_id,
    )
    assert maintenance.prune(db, retention_days=30, batch=1) == 1
    assert ledger.get_request(db, old.request_id) is None
    assert ledger.events(db, old.request_id) == []
    assert outbox(db, old.request_id) == []
    assert ledger.get_request(db, recent.request_id) is not None
    assert ledger.get_request(db, stuck.request_id) is not None  # still sending: kept


def test_a_connection_killed_by_the_server_does_not_poison_the_pool(database_url: str) -> None:
    database = Database(database_url, pool_size=1)
    admin = Database(database_url, pool_size=1)
    try:
        [(pid,)] = query(database, "SELECT pg_backend_pid()")
        query(admin, "SELECT pg_terminate_backend(%s)", pid)
        # pg_terminate_backend only signals: wait until the backend is gone (its goodbye is
        # then on our idle socket), as after a restart.
        deadline = time.monotonic() + 5
        while query(admin, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid):
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.01)
        [(new_pid,)] = query(database, "SELECT pg_backend_pid()")
        assert new_pid != pid
        [(zone,)] = query(database, "SHOW TIME ZONE")
        assert zone == "UTC"
    finally:
        database.close()
        admin.close()


def test_a_live_connection_with_something_to_read_is_probed_and_still_usable(
    database_url: str,
) -> None:
    database = Database(database_url, pool_size=1)
    admin = Database(database_url, pool_size=1)
    try:
        with database.autocommit() as cur:
            cur.execute("LISTEN ew_probe")
        query(admin, "NOTIFY ew_probe")  # the idle pooled socket now has a message to read
        time.sleep(0.2)
        with database.autocommit() as cur:  # probed (suspect), then switched to autocommit
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert query(database, "SELECT 2") == [(2,)]
    finally:
        database.close()
        admin.close()


def test_unreachable_database_is_a_deferred_failure() -> None:
    database = Database("postgresql://postgres@127.0.0.1:1/none", pool_size=1, connect_timeout=1)
    try:
        assert database.ping() is False
        with pytest.raises(DeferredFailure) as down, database.transaction():
            pass
        assert down.value.reason == Reason.DATABASE_UNAVAILABLE
        assert isinstance(down.value.__cause__, psycopg2.OperationalError)
    finally:
        database.close()


def test_ping(db: Database) -> None:
    assert db.ping() is True
