"""Group commit in the ledger, against a real Postgres: a batch of claims or outcomes answers
every request exactly as a lone call would, in the caller's order, fenced row by row; many
threads share statements without losing or doubling anything."""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg2
import pytest
from psycopg2 import sql

from email_worker.ledger import pg_ledger as ledger
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import AlreadySent, Claim, LedgerStatus
from schemas.callback import CallbackStatus
from schemas.failures import DeferredFailure, PermanentFailure, Reason
from tests.fakes import email_request
from tests.integration.test_ledger import EMAIL, must_claim, outbox, outcome, query, sent
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration


def test_a_batch_of_claims_answers_each_request_as_a_lone_claim_would(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    done = email_request("b-done")
    book.finish(must_claim(book.claim(done)), done, sent())
    busy = email_request("b-busy")
    held = must_claim(book.claim(busy))
    retry = email_request("b-retry")
    pending = outcome(LedgerStatus.PENDING, CallbackStatus.PENDING, Reason.SMTP_TRANSIENT)
    book.finish(must_claim(book.claim(retry)), retry, pending)
    fresh = email_request("a-fresh")  # sorts first: the batch runs in request_id order
    conflict = email_request("b-done", payload_hash="hash-2")

    results = book.claim_many([retry, fresh, busy, done, conflict, fresh])

    assert isinstance(results[0], Claim) and results[0].attempt == 2
    assert not results[0].taken_over
    assert isinstance(results[1], Claim) and results[1].request_id == "a-fresh"
    assert results[1].attempt == 1
    assert isinstance(results[2], DeferredFailure) and results[2].reason == Reason.LEASE_BUSY
    assert results[3] == AlreadySent("b-done", "<abc@example.com>")
    assert isinstance(results[4], PermanentFailure)
    assert results[4].reason == Reason.IDEMPOTENCY_CONFLICT
    # the same id twice in one batch is claimed once; the second is told it is leased
    assert isinstance(results[5], DeferredFailure) and results[5].reason == Reason.LEASE_BUSY
    assert [e["event"] for e in ledger.events(db, "a-fresh")] == ["claimed"]
    assert [e["event"] for e in ledger.events(db, "b-retry")] == ["claimed", "pending", "claimed"]
    row = ledger.get_request(db, "b-busy")
    assert row is not None and row["lease_owner"] == held.lease


def test_a_batch_of_outcomes_is_fenced_row_by_row(db: Database) -> None:
    short = PgLedger(db, lease_seconds=0.2)
    book = PgLedger(db, lease_seconds=30)
    first, lost, last = (email_request(f"f-{name}") for name in ("c", "a", "b"))
    claims = [must_claim(book.claim(first)), must_claim(short.claim(lost))]
    claims.append(must_claim(book.claim(last)))
    expired = "SELECT lease_expires_at < now() FROM email_requests WHERE request_id = 'f-a'"
    wait_for(lambda: query(db, expired) == [(True,)], 10, "the short lease to expire")
    taker = must_claim(book.claim(lost))  # another worker takes the expired lease over
    failed = outcome(LedgerStatus.FAILED, CallbackStatus.FAILED, Reason.MESSAGE_REJECTED)

    results = book.finish_many(
        [(claims[0], first, sent()), (claims[1], lost, sent()), (claims[2], last, failed)]
    )

    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], DeferredFailure) and results[1].reason == Reason.LEASE_LOST
    statuses = query(
        db,
        "SELECT request_id, status, lease_owner FROM email_requests ORDER BY request_id",
    )
    assert statuses == [("f-a", "sending", taker.lease), ("f-b", "failed", None),
                        ("f-c", "sent", None)]  # fmt: skip
    assert [r[:2] for r in outbox(db, "f-c")] == [("delivered", "pending")]
    assert [r[:2] for r in outbox(db, "f-b")] == [("failed", "pending")]
    assert outbox(db, "f-a") == []
    assert [e["event"] for e in ledger.events(db, "f-a")] == ["claimed", "taken_over"]


def test_a_batch_that_postgres_refuses_writes_nothing(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    requests = [email_request(f"i-{n}") for n in range(2)]
    claims = [must_claim(book.claim(request)) for request in requests]
    broken = replace(sent(), email=replace(EMAIL, html="nul \x00 byte"))  # Postgres refuses it
    with pytest.raises(psycopg2.DataError):
        book.finish_many([(claims[0], requests[0], sent()), (claims[1], requests[1], broken)])
    statuses = query(db, "SELECT status FROM email_requests ORDER BY request_id")
    assert statuses == [("sending",), ("sending",)]  # each is then run alone (group_commit)


def lock_waits(db: Database) -> int:
    """Sessions of this database that are waiting for a lock right now."""
    rows = query(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'",
    )
    return int(rows[0][0])


def test_a_claim_blocked_by_a_row_lock_holds_up_no_other_claim(
    db: Database, database_url: str
) -> None:
    book = PgLedger(db, lease_seconds=30)
    held = email_request("held")
    holder = psycopg2.connect(database_url)
    try:
        with holder.cursor() as cur:  # uncommitted: a claim of "held" must wait for it
            cur.execute(
                "INSERT INTO email_requests (request_id, payload_hash, status, notification_id,"
                " correlation_id) VALUES ('held', '', 'pending', 'n', 'c')"
            )
        with pytest.raises(DeferredFailure):  # a shared statement gives up waiting ...
            book.claim_many([held, email_request("free-0")], lock_timeout_ms=50)
        assert query(db, "SELECT count(*) FROM email_requests") == [(0,)]  # ... and claims none
        blocked: list[object] = []
        waiter = threading.Thread(target=lambda: blocked.append(book.claim(held)))
        waiter.start()
        # The claim of "held" is waiting on the holder's row lock (seen by Postgres itself).
        wait_for(lambda: lock_waits(db) >= 1, 10, "the claim of 'held' to wait on the lock")
        for n in range(1, 4):  # ... and the others are claimed meanwhile, through the group
            must_claim(book.claim(email_request(f"free-{n}")))
        assert waiter.is_alive() and blocked == []
        holder.rollback()
        waiter.join(10)
        assert isinstance(blocked[0], Claim) and blocked[0].request_id == "held"
    finally:
        holder.close()


def test_a_batch_while_the_database_is_down_defers_every_request() -> None:
    down = Database("postgresql://postgres@127.0.0.1:9/none", pool_size=1, connect_timeout=1)
    book = PgLedger(down, lease_seconds=30)
    results = book.claim_many([email_request(), email_request()])
    assert [type(r) for r in results] == [DeferredFailure, DeferredFailure]
    assert {r.reason for r in results if isinstance(r, DeferredFailure)} == {
        Reason.DATABASE_UNAVAILABLE
    }


def test_many_threads_share_statements_and_each_request_is_written_once(db: Database) -> None:
    sizes: dict[str, list[int]] = {"claim": [], "finish": []}
    book = PgLedger(
        db, lease_seconds=30, observe_batch=lambda statement, size: sizes[statement].append(size)
    )
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(thread: int) -> None:
        start.wait()
        try:
            for n in range(12):
                request = email_request(f"t-{thread:02}-{n:02}")
                book.finish(must_claim(book.claim(request)), request, sent())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert query(db, "SELECT status, count(*) FROM email_requests GROUP BY status") == [
        ("sent", 192)
    ]
    events = query(
        db, "SELECT event, count(DISTINCT request_id), count(*) FROM email_events GROUP BY event"
    )
    assert sorted(events) == [("claimed", 192, 192), ("sent", 192, 192)]
    assert query(db, "SELECT count(DISTINCT request_id), count(*) FROM callback_outbox") == [
        (192, 192)
    ]
    for statement in ("claim", "finish"):  # every request in exactly one shared statement
        assert sum(sizes[statement]) == 192
        assert max(sizes[statement]) > 1  # 16 threads at once: some statements were shared


def test_a_lone_claim_keeps_the_databases_own_lock_timeout(database_url: str) -> None:
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    holder = psycopg2.connect(database_url)
    with admin.cursor() as cur:  # an operator's setting, for sessions opened from now on
        cur.execute("SELECT current_database()")
        (name,) = cur.fetchone() or ("",)
        cur.execute(
            sql.SQL("ALTER DATABASE {} SET lock_timeout = '300ms'").format(sql.Identifier(name))
        )
    fresh = Database(database_url, pool_size=2)
    try:
        migrate(fresh)
        with holder.cursor() as cur:
            cur.execute(
                "INSERT INTO email_requests (request_id, payload_hash, status, notification_id,"
                " correlation_id) VALUES ('held', '', 'pending', 'n', 'c')"
            )
        raised: list[BaseException] = []

        def claim() -> None:
            try:
                PgLedger(fresh, lease_seconds=30).claim(email_request("held"))
            except BaseException as exc:
                raised.append(exc)

        waiter = threading.Thread(target=claim)
        waiter.start()
        waiter.join(10)  # shared statement: 100 ms; alone: the database's 300 ms, not forever
        assert not waiter.is_alive()
        assert isinstance(raised[0], DeferredFailure)
    finally:
        holder.rollback()
        holder.close()
        fresh.close()
        admin.close()
