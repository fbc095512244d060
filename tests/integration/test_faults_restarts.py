"""RabbitMQ and PostgreSQL restarted while messages flow: the worker reconnects by itself, never
acks what the ledger has not committed, and the ledger checker finds nothing lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.support.ledger_check import LedgerCheck
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def _cluster() -> str | None:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    return versions[-1] if versions and shutil.which("pg_ctlcluster") else None


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


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs a local broker")
def test_broker_restart_while_messages_flow(stack: Stack) -> None:
    check = stack.ledger_check()
    add_batch(check, "mq-a", 30)
    stack.smtp.enqueue(*[Behaviour(delay=0.05)] * 30)
    worker = stack.start_worker(concurrency=2, prefetch=8)
    check.publish()
    wait_for(lambda: sent(stack, check) >= 3, 20, "the flow to start")
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    try:
        wait_for(lambda: not worker.consumer.consuming, 10, "the worker to notice")
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True)
    wait_for(lambda: worker.consumer.consuming, 60, "the worker to reconnect")
    add_batch(check, "mq-b", 10)
    check.publish()
    report = stack.settle_and_check(check, 40)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] + report.counts["duplicated"] == 40


def test_database_restart_while_messages_flow(stack: Stack) -> None:
    check = stack.ledger_check()
    add_batch(check, "pg", 30)
    stack.smtp.enqueue(*[Behaviour(delay=0.05)] * 30)
    stack.start_worker(concurrency=2, prefetch=8, retry_delays=[0.5, 1.0], max_attempts=5)
    check.publish()
    wait_for(lambda: sent(stack, check) >= 3, 20, "the flow to start")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", str(_cluster()), "main", "restart"]
    subprocess.run([*command, "-m", "fast"], check=True, capture_output=True, timeout=60)
    wait_for(lambda: sent(stack, check) >= 0, 30, "the database to answer")
    report = stack.settle_and_check(check, 40)
    assert report.ok, report.summary()
    # The database was down: some messages may have been re-sent after the relay accepted
    # them (the commit of "sent" failed); each such duplicate carries the same Message-ID.
    assert report.counts["delivered_once"] + report.counts["duplicated"] == 30
