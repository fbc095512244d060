"""The retry copies the ledger keeps, on a real Postgres and RabbitMQ: an outcome that schedules a
retry stores the body and properties with the due time, a claim clears them, beat re-publishes
an overdue one to the email queue by name exactly as it was (and only once per overdue period),
gives the marks back when the broker refuses, and pruning takes the bodies with their rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pika
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from email_worker.app.build import callback_runtime
from email_worker.broker.publisher import Publisher
from email_worker.broker.settle import ATTEMPTS_HEADER, DEFERRALS_HEADER, FIRST_ATTEMPT_HEADER
from email_worker.broker.topology import connection_parameters
from email_worker.ledger import maintenance
from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import AlreadySent, Claim, LedgerStatus, Record, RetryCopy
from schemas.callback import CallbackStatus
from schemas.failures import Reason
from tests.fakes import email_request

pytestmark = pytest.mark.integration

BODY = b'{"request_id": "r", "to_email": "ada@example.com", "template_code": "welcome"}\n'
PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "correlation_id": "corr-1",
    "message_id": "msg-1",
    "priority": 7,
    "timestamp": 1_700_000_000,
    "headers": {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque",
        ATTEMPTS_HEADER: 1,
        DEFERRALS_HEADER: 0,
    },
}


def pending(retry: RetryCopy | None) -> Record:
    return Record(
        status=LedgerStatus.PENDING,
        callback=CallbackStatus.PENDING,
        reason=Reason.SMTP_TRANSIENT,
        detail="451",
        retry=retry,
    )


def must_claim(result: Claim | AlreadySent) -> Claim:
    assert isinstance(result, Claim)
    return result


def row(db: Database, request_id: str) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT retry_due_at - now() AS due_in, retry_due_at, retry_body, retry_properties"
            " FROM email_requests WHERE request_id = %s",
            (request_id,),
        )
        due_in, due, body, properties = cur.fetchone() or (None, None, None, None)
    return {"due_in": due_in, "due": due, "body": body, "properties": properties}


def scheduled(db: Database, due_in: float = 5.0) -> str:
    """A request whose outcome scheduled a retry due in ``due_in`` seconds; its id."""
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    book.finish(claim, request, pending(RetryCopy(due_in, BODY, PROPERTIES)))
    return request.request_id


def make_overdue(db: Database, request_id: str, seconds: float) -> None:
    with db.transaction() as cur:
        cur.execute(
            "UPDATE email_requests SET retry_due_at = now() - make_interval(secs => %s)"
            " WHERE request_id = %s",
            (seconds, request_id),
        )


def test_a_scheduled_retry_keeps_the_copy_and_the_next_claim_clears_it(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    request = email_request()
    claim = must_claim(book.claim(request))
    book.finish(claim, request, pending(RetryCopy(5.0, BODY, PROPERTIES)))
    kept = row(db, request.request_id)
    assert timedelta(seconds=4) < kept["due_in"] <= timedelta(seconds=5)
    assert bytes(kept["body"]) == BODY and kept["properties"] == PROPERTIES
    claim = must_claim(book.claim(request))  # the copy came back
    assert row(db, request.request_id) == {
        "due_in": None,
        "due": None,
        "body": None,
        "properties": None,
    }
    book.finish(claim, request, pending(None))  # a retry without a copy (an older worker's)
    assert row(db, request.request_id)["body"] is None


@pytest.fixture
def email_queue(amqp_url: str, unique_prefix: str) -> Iterator[str]:
    """A plain queue on the shared broker, standing for ``email.queue``; deleted after."""
    name = f"{unique_prefix}.email.queue"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(name, durable=True)
        yield name
        connection.channel().queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def publisher(amqp_url: str) -> Iterator[Publisher]:
    made = Publisher(connection_parameters(amqp_url, 0, "test re-drive"))
    yield made
    made.close()


def take_one(amqp_url: str, queue: str) -> tuple[pika.BasicProperties, bytes] | None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    return None if method is None else (properties, body)


def test_beat_re_drives_an_overdue_copy_as_it_was_once_per_period(
    db: Database, amqp_url: str, email_queue: str, publisher: Publisher
) -> None:
    overdue, on_time = scheduled(db), scheduled(db)
    make_overdue(db, overdue, 301)  # lost: overdue by more than RETRY_OVERDUE_SECONDS
    make_overdue(db, on_time, 299)  # late, but within the period
    counted = REGISTRY.get_sample_value("email_worker_retries_redriven_total") or 0.0
    assert maintenance.redrive_retries(db, publisher, email_queue, 300) == 1
    copy = take_one(amqp_url, email_queue)
    assert copy is not None and take_one(amqp_url, email_queue) is None
    properties, body = copy
    assert body == BODY  # byte for byte
    assert properties.delivery_mode == 2 and properties.expiration is None
    kept = {name: getattr(properties, name) for name in PROPERTIES if name != "headers"}
    assert kept == {name: value for name, value in PROPERTIES.items() if name != "headers"}
    headers = dict(properties.headers or {})
    assert headers.pop(FIRST_ATTEMPT_HEADER).endswith("Z")  # from the ledger's first attempt
    assert headers == PROPERTIES["headers"]
    assert REGISTRY.get_sample_value("email_worker_retries_redriven_total") == counted + 1
    # The mark moved to the re-drive: the same lost copy is re-driven again only a period later.
    assert row(db, overdue)["due_in"] <= timedelta(0)
    assert maintenance.redrive_retries(db, publisher, email_queue, 300) == 0
    make_overdue(db, overdue, 301)
    assert maintenance.redrive_retries(db, publisher, email_queue, 300) == 1
    with db.transaction() as cur:
        cur.execute("SELECT event FROM email_events WHERE request_id = %s ORDER BY id", (overdue,))
        assert [e for (e,) in cur.fetchall()] == ["claimed", "pending", *["retry_redriven"] * 2]


def test_when_the_broker_refuses_the_marks_stay_for_the_next_run(
    db: Database, publisher: Publisher, unique_prefix: str
) -> None:
    request_id = scheduled(db)
    make_overdue(db, request_id, 600)
    before = row(db, request_id)["due"]
    missing = f"{unique_prefix}.no.such.queue"  # mandatory: returned unroutable, not dropped
    assert maintenance.redrive_retries(db, publisher, missing, 300) == 0
    assert row(db, request_id)["due"] == before
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM email_events WHERE event = 'retry_redriven'")
        assert cur.fetchone() == (0,)


def test_pruning_takes_the_stored_copies_with_their_rows(db: Database) -> None:
    request_id = scheduled(db)
    with db.transaction() as cur:  # an ambiguous send with a retry scheduled, long forgotten
        cur.execute(
            "UPDATE email_requests SET status = 'unknown', updated_at = now() - interval '40 days'"
            " WHERE request_id = %s",
            (request_id,),
        )
    assert maintenance.prune(db, retention_days=30) == 1
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM email_requests WHERE retry_body IS NOT NULL")
        assert cur.fetchone() == (0,)


def test_beats_task_re_drives_to_the_configured_email_queue(
    db: Database, database_url: str, amqp_url: str, email_queue: str
) -> None:
    from email_worker.callbacks import tasks
    from email_worker.config import Settings

    request_id = scheduled(db)
    make_overdue(db, request_id, 61)
    settings = Settings(
        amqp_url=SecretStr(amqp_url),
        database_url=SecretStr(database_url),
        email_queue=email_queue,
        retry_overdue_seconds=60,
        db_pool_size=1,
    )
    app = tasks.make_celery("memory://", "q")
    tasks.configure(settings, callback_runtime)
    try:
        assert app.tasks[tasks.REDRIVE_RETRIES]() == 1  # run in this process, as a worker would
    finally:
        tasks.configure(Settings(), callback_runtime)  # closes the runtime built for this test
    copy = take_one(amqp_url, email_queue)
    assert copy is not None and copy[1] == BODY
