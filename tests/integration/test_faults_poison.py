"""A poison message: the worker process dies every time it holds it. The broker's delivery
limit (``EMAIL_WORKER_DELIVERY_LIMIT=2``, so 3 deliveries on 3.10) moves it to
``failed.queue`` (reason ``delivery_limit``) while the other messages are delivered.

No input crashes the worker (the hostile-input table is the evidence), so the crash is made
from outside, without a hook in the worker: the test holds an uncommitted insert of the poison
``request_id`` in Postgres, the worker's claim of that id waits on it, and the test then kills
the process, exactly as a crash at that point would."""

from __future__ import annotations

import signal
import uuid

import pika
import psycopg2
import pytest

from email_worker.app import declare_topology
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

LIMIT = 2


def blocked(stack: Stack) -> bool:
    return bool(waiting(stack, "pid"))


def waiting(stack: Stack, what: str) -> list[dict[str, object]]:
    """Backends of this test's database waiting on a lock (``what``: a column or a call)."""
    name = stack.database_url.rpartition("/")[2]
    return stack.query(
        f"SELECT {what} AS v FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
        name,
    )


def fresh_queue_with_limit(stack: Stack) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        connection.channel().queue_delete(stack.settings().email_queue)
    finally:
        connection.close()
    declare_topology(stack.settings(delivery_limit=LIMIT))


def test_poison_message_ends_in_failed_queue_and_the_rest_is_served(stack: Stack) -> None:
    fresh_queue_with_limit(stack)
    check = stack.ledger_check()
    poison = check.add(f"poison-{uuid.uuid4().hex[:6]}", expect="delivery_limit")
    fine = [check.add(f"fine-{n}-{uuid.uuid4().hex[:6]}").key for n in range(5)]
    holder = psycopg2.connect(stack.database_url)
    try:
        with holder.cursor() as cur:  # uncommitted: the worker's claim of this id waits
            cur.execute(
                "INSERT INTO email_requests"
                " (request_id, payload_hash, status, notification_id, correlation_id)"
                " VALUES (%s, '', 'pending', %s, %s)",
                (poison.key, poison.key, poison.key),
            )
        check.publish()
        crashes = 0
        while crashes <= LIMIT:
            with stack.spawn(delivery_limit=LIMIT, concurrency=2, lease_seconds=2) as process:
                wait_for(lambda: blocked(stack), 20, "the worker to hold the poison message")
                # The other threads keep serving: the rest goes out while the poison is held.
                wait_for(lambda: all(stack.status(k) == "sent" for k in fine), 20, "the rest")
                process.send_signal(signal.SIGKILL)
                process.wait(10)
            # A killed client's backend keeps waiting until the lock is free: end it, as the
            # server would once it noticed the dead socket.
            waiting(stack, "pg_terminate_backend(pid)")
            crashes += 1
        wait_for(lambda: any(d.key == poison.key for d in check.dead_letters()), 10)
    finally:
        holder.rollback()
        holder.close()
    with stack.spawn(delivery_limit=LIMIT):
        report = stack.settle_and_check(check, 30)
    assert report.ok, report.summary()
    assert report.of(poison.key).outcome == "dead_lettered"
    assert report.counts["delivered_once"] == 5
    (record,) = [r for r in stack.dead_letters() if r.headers.failure_reason == "delivery_limit"]
    assert poison.key.encode() in record.body  # the original body, byte for byte
