"""RabbitMQ and PostgreSQL restarted while messages flow: the worker reconnects by itself, never
acks what the ledger has not committed, and the ledger checker finds nothing lost."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from tests.support.ledger_check import LedgerCheck
from tests.support.private_postgres import (  # noqa: F401 (fixtures)
    PrivatePostgres,
    private_pg_stack_fixture,
    private_postgres_fixture,
)
from tests.support.private_rabbit import (  # noqa: F401 (fixtures)
    PrivateRabbit,
    private_rabbit_fixture,
    private_stack_fixture,
)
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def add_batch(check: LedgerCheck, label: str, count: int) -> None:
    for n in range(count):
        check.add(f"{label}-{n}-{uuid.uuid4().hex[:6]}")


def sent(stack: Stack, check: LedgerCheck) -> int:
    try:
        rows = stack.query(
            "SELECT count(*) AS n FROM email_requests WHERE status = 'sent'"
            " AND request_id = ANY(%s)",
            [r.key for r in check.requests],
        )
    except psycopg2.Error:
        return -1
    return int(rows[0]["n"])


def test_broker_restart_while_messages_flow(
    private_rabbit: PrivateRabbit, private_stack: Stack
) -> None:
    # A node of this module's own: the shared broker serves other tests meanwhile.
    stack = private_stack
    check = stack.ledger_check()
    add_batch(check, "mq-a", 30)
    stack.smtp.enqueue(*[Behaviour(delay=0.05)] * 30)
    worker = stack.start_worker(concurrency=2, prefetch=8)
    check.publish()
    wait_for(lambda: sent(stack, check) >= 3, 20, "the flow to start")
    private_rabbit.stop_app()
    try:
        wait_for(lambda: not worker.consumer.consuming, 10, "the worker to notice")
    finally:
        private_rabbit.start_app()
    wait_for(lambda: worker.consumer.consuming, 60, "the worker to reconnect")
    add_batch(check, "mq-b", 10)
    check.publish()
    report = stack.settle_and_check(check, 40)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] + report.counts["duplicated"] == 40


def test_database_restart_while_messages_flow(
    private_postgres: PrivatePostgres, private_pg_stack: Stack
) -> None:
    # A server of this module's own, the one the worker's DATABASE_URL names: the shared one
    # serves other tests meanwhile.
    stack = private_pg_stack
    check = stack.ledger_check()
    add_batch(check, "pg", 30)
    stack.smtp.enqueue(*[Behaviour(delay=0.05)] * 30)
    stack.start_worker(concurrency=2, prefetch=8, retry_delays=[0.5, 1.0], max_attempts=5)
    check.publish()
    wait_for(lambda: sent(stack, check) >= 3, 20, "the flow to start")
    started = stack.query("SELECT pg_postmaster_start_time() AS at")[0]["at"]
    private_postgres.restart()
    wait_for(lambda: sent(stack, check) >= 0, 30, "the database to answer")
    # The server behind the worker's DATABASE_URL is the one that restarted.
    assert stack.query("SELECT pg_postmaster_start_time() AS at")[0]["at"] > started
    report = stack.settle_and_check(check, 40)
    assert report.ok, report.summary()
    # The database was down: some messages may have been re-sent after the relay accepted
    # them (the commit of "sent" failed); each such duplicate carries the same Message-ID.
    assert report.counts["delivered_once"] + report.counts["duplicated"] == 30
