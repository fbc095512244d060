"""Retry copies the broker may lose: a copy waiting in its delay queue while the broker restarts
(classic and quorum delay queues), and a copy that vanishes (its delay queue purged). Each
request ends delivered exactly once, by the ledger checker: the broker brings the copy back (a
quorum delay queue dead-letters at least once), or beat re-drives it from the ledger once it is
overdue (``maintenance.redrive_retries``, run here by a thread as `email-worker beat` runs it).

The restart runs on a private RabbitMQ node (``tests/support/private_rabbit.py``), never on the
shared one that other tests use at the same time."""

from __future__ import annotations

import threading
import uuid
from types import TracebackType
from typing import Any

import pika
import pytest
from prometheus_client import REGISTRY

from email_worker.broker.publisher import Publisher
from email_worker.broker.topology import connection_parameters
from email_worker.ledger import maintenance
from email_worker.ledger.db import Database
from schemas.failures import DeferredFailure
from tests.support.ledger_check import LedgerCheck
from tests.support.private_rabbit import (  # noqa: F401 (fixtures)
    PrivateRabbit,
    private_rabbit_fixture,
    private_stack_fixture,
)
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

DELAY = 3.0  # the retry delay: time enough to stop the broker while the copy waits in it
TRY_LATER = Behaviour(rcpt="451 4.3.0 try again later")  # one refusal, then accepted
REDRIVEN = "email_worker_retries_redriven_total"


class Beat:
    """Beat's re-drive of overdue retries, every ``every`` seconds on a thread of its own, with
    its own database pool and publisher, as the callbacks worker runs it."""

    def __init__(self, stack: Stack, overdue: float, every: float = 0.5) -> None:
        self._db = Database(stack.database_url, pool_size=1)
        self._publisher = Publisher(connection_parameters(stack.amqp_url, 0, "test beat"))
        self._queue = stack.settings().email_queue
        self._overdue, self._every = overdue, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.redriven = 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):  # the schedule's period, not a synchronisation
            try:
                self.redriven += maintenance.redrive_retries(
                    self._db, self._publisher, self._queue, self._overdue
                )
            except DeferredFailure:  # the database is down: the next tick tries again
                continue

    def __enter__(self) -> Beat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        self._publisher.close()
        self._db.close()


def depth(stack: Stack, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def retry_mark(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request's retry mark beside the database clock (``due``, ``now``)."""
    rows = stack.query(
        "SELECT retry_due_at AS due, now() AS now FROM email_requests WHERE request_id = %s",
        request_id,
    )
    return rows[0] if rows else {"due": None, "now": None}


def copy_waiting(stack: Stack, check: LedgerCheck, queue: str) -> str:
    """Publish one request that the relay refuses once, and wait until its retry copy waits in
    ``queue`` (the ledger holds its mark). Returns its key."""
    request = check.add(f"copy-{uuid.uuid4().hex[:8]}")
    assert request.recipient is not None
    stack.smtp.script(request.recipient, TRY_LATER)
    check.publish()
    wait_for(lambda: retry_mark(stack, request.key)["due"] is not None, 20, "the retry mark")
    wait_for(lambda: depth(stack, queue) == 1, 10, "the retry copy in its delay queue")
    return request.key


def events(stack: Stack, request_id: str) -> list[str]:
    rows = stack.query(
        "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request_id
    )
    return [row["event"] for row in rows]


@pytest.mark.parametrize(
    ("retry_queue_type", "overdue"),
    # Classic delay queues dead-letter at most once: beat may have to re-drive the copy, soon.
    # A quorum delay queue keeps it (at least once): beat, given time, never has to.
    [("classic", 4.0), ("quorum", 30.0)],
)
def test_a_retry_copy_in_flight_while_the_broker_restarts(
    private_rabbit: PrivateRabbit, private_stack: Stack, retry_queue_type: str, overdue: float
) -> None:
    stack = private_stack
    settings: dict[str, Any] = {
        "retry_delays": [DELAY],
        "retry_queue_type": retry_queue_type,
        "retry_overdue_seconds": overdue,
    }
    queue = stack.settings(**settings).retry_queue_name(DELAY)
    stack.start_worker(**settings)
    check = stack.ledger_check()
    key = copy_waiting(stack, check, queue)
    private_rabbit.stop_app()
    # Nothing claimed the copy before the broker stopped: it was in the broker, in flight.
    mark = retry_mark(stack, key)
    assert mark["due"] is not None
    # It expires while the broker is down: recovery must dead-letter it back, or lose it.
    wait_for(lambda: retry_mark(stack, key)["now"] > mark["due"], DELAY + 5, "the copy's TTL")
    private_rabbit.start_app()
    with Beat(stack, overdue) as beat:
        report = stack.settle_and_check(check, overdue + 45, callbacks=True)
    assert report.ok, report.summary()
    assert report.of(key).outcome == "delivered_once"
    if retry_queue_type == "quorum":
        assert beat.redriven == 0, "the quorum delay queue lost the copy: beat had to re-drive"


def test_a_retry_copy_that_vanishes_is_re_driven_from_the_ledger(stack: Stack) -> None:
    settings: dict[str, Any] = {"retry_delays": [DELAY], "retry_overdue_seconds": 1.0}
    queue = stack.settings(**settings).retry_queue_name(DELAY)
    stack.start_worker(**settings)
    check = stack.ledger_check()
    key = copy_waiting(stack, check, queue)
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        purged = connection.channel().queue_purge(queue).method.message_count
    finally:
        connection.close()
    assert purged == 1  # the copy is gone: only the ledger knows the request still owes a try
    counted = REGISTRY.get_sample_value(REDRIVEN) or 0.0
    with Beat(stack, 1.0) as beat:
        report = stack.settle_and_check(check, 40, callbacks=True)
    assert report.ok, report.summary()
    assert report.of(key).outcome == "delivered_once"
    assert beat.redriven == 1
    assert REGISTRY.get_sample_value(REDRIVEN) == counted + 1
    history = events(stack, key)
    assert history.index("retry_redriven") < history.index("sent")
    assert retry_mark(stack, key)["due"] is None  # the claim of the re-driven copy cleared it
