"""The ledger's crash-loop guard (MAX_DELIVERIES, reason ``redelivery_limit``) on a real Postgres
and RabbitMQ: deliveries that died holding a request are counted by the claim, an outcome resets
the count, and past the limit the request is failed, dead-lettered and reported, whatever the
queue type (here a plain classic queue, as a gateway declares it, with no delivery limit)."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import pika
import pytest

from email_worker.app import declare_topology
from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record
from schemas.callback import CallbackStatus
from schemas.failures import PermanentFailure, Reason
from schemas.inbound import parse_message
from tests.fakes import email_request
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

URL = "http://gateway.test/api/v1/email/status/"
PENDING = Record(
    status=LedgerStatus.PENDING,
    callback=CallbackStatus.PENDING,
    reason=Reason.SMTP_TRANSIENT,
    detail="451",
    callback_url=URL,
)


def must_claim(result: Claim | AlreadySent) -> Claim:
    assert isinstance(result, Claim)
    return result


def die_holding(db: Database, claim: Claim) -> None:
    """What a worker killed after its claim leaves: a lease never released, now expired."""
    with db.transaction() as cur:
        cur.execute(
            "UPDATE email_requests SET lease_expires_at = now() - interval '1 second'"
            " WHERE request_id = %s AND lease_owner = %s",
            (claim.request_id, claim.lease),
        )
        assert cur.rowcount == 1


def test_the_claim_counts_deliveries_that_died_and_an_outcome_resets_the_count(
    db: Database,
) -> None:
    book = PgLedger(db, lease_seconds=30, max_deliveries=5)
    request = email_request()
    counts = []
    for _ in range(3):
        claim = must_claim(book.claim(request))
        counts.append(claim.deliveries)
        die_holding(db, claim)
    assert counts == [1, 2, 3]
    claim = must_claim(book.claim(request))
    assert (claim.deliveries, claim.taken_over, claim.failure) == (4, True, None)
    book.finish(claim, request, PENDING)  # an outcome: the next claim starts afresh
    again = must_claim(book.claim(request))
    assert (again.deliveries, again.taken_over, again.failure) == (1, False, None)


def test_expire_leases_does_not_reset_the_count(db: Database) -> None:
    from email_worker.ledger import maintenance

    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    die_holding(db, must_claim(book.claim(request)))
    with db.transaction() as cur:  # expired long enough for beat's grace
        cur.execute(
            "UPDATE email_requests SET lease_expires_at = now() - interval '1 hour'"
            " WHERE request_id = %s",
            (request.request_id,),
        )
    assert maintenance.expire_leases(db) == 1  # 'unknown', the dead owner kept
    assert must_claim(book.claim(request)).deliveries == 2


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_past_max_deliveries_the_claim_carries_redelivery_limit(db: Database, limit: int) -> None:
    book = PgLedger(db, lease_seconds=30, max_deliveries=limit)
    request = email_request()
    for _ in range(limit + 1):  # the first delivery and `limit` redeliveries all died
        claim = must_claim(book.claim(request))
        assert claim.failure is None
        die_holding(db, claim)
    claim = must_claim(book.claim(request))  # redelivery number limit + 1
    assert isinstance(claim.failure, PermanentFailure)
    assert claim.failure.reason == Reason.REDELIVERY_LIMIT
    assert f"redelivered {limit + 1} times" in claim.failure.detail


def plain_email_queue(stack: Stack) -> None:
    """``email.queue`` as most gateways declare it: classic, durable, no arguments (so no
    ``x-delivery-limit``); then the worker's start-up declarations adopt it and bind it."""
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_delete(stack.settings().email_queue)
        channel.queue_declare(stack.settings().email_queue, durable=True)
    finally:
        connection.close()
    declare_topology(stack.settings())


def message(key: str) -> dict[str, Any]:
    return {
        "request_id": key,
        "template_code": "welcome",
        "to_email": f"{key}@example.com",
        "variables": {"name": "Ada", "link": "https://example.com/x"},
    }


def test_a_request_that_kept_killing_its_workers_is_dead_lettered_once(stack: Stack) -> None:
    plain_email_queue(stack)
    check = stack.ledger_check()
    key = f"loop-{uuid.uuid4().hex[:8]}"
    check.add(key, body=message(key), expect="redelivery_limit")
    # Three earlier deliveries (the first and two redeliveries) died holding the request.
    db = Database(stack.database_url, pool_size=1)
    try:
        book = PgLedger(db, lease_seconds=30, max_deliveries=1)
        request = parse_message(json.dumps(message(key)).encode())
        for _ in range(2):
            die_holding(db, must_claim(book.claim(request)))
    finally:
        db.close()
    stack.start_worker(max_deliveries=1)
    check.publish()
    report = stack.settle_and_check(check, 30, callbacks=True)
    assert report.ok, report.summary()
    assert stack.smtp.data_transactions == 0  # recorded at once: no attempt was made
    record = stack.dead_letter(key)
    assert record.headers.failure_reason == "redelivery_limit"
    assert "redelivered 2 times" in record.headers.failure_detail
    assert stack.status(key) == "failed"
    (failed,) = [c for c in stack.callbacks(key) if c["status"] == "failed"]
    assert failed["error"].startswith("redelivery_limit: ")


def test_a_worker_killed_holding_the_message_each_time_ends_in_a_dead_letter(
    stack: Stack,
) -> None:
    # The real crash loop: `email-worker run` is SIGKILLed while it holds the message (its
    # claim committed, the relay silent after DATA, keeping no copy), MAX_DELIVERIES + 1 times.
    plain_email_queue(stack)
    check = stack.ledger_check()
    request = check.add(f"kill-{uuid.uuid4().hex[:8]}", expect="redelivery_limit")
    assert request.recipient is not None
    stack.smtp.script(request.recipient, Behaviour(delay=120), Behaviour(delay=120))
    fast: dict[str, Any] = {
        "max_deliveries": 1,
        "lease_seconds": 2,
        "retry_delays": [0.3],
        "concurrency": 2,
    }
    check.publish()
    for kills in (1, 2):

        def hanging(n: int = kills) -> bool:
            return stack.smtp.data_transactions >= n

        with stack.spawn(**fast) as process:
            wait_for(hanging, 30, "the send to hang")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    with stack.spawn(**fast):  # the third delivery's claim is past the limit: no attempt
        report = stack.settle_and_check(check, 40)
    assert report.ok, report.summary()
    assert stack.smtp.data_transactions == 2
    (verdict,) = report.verdicts
    assert verdict.outcome == "dead_lettered" and verdict.copies == 0
