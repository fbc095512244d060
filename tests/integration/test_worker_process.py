"""The ``email-worker`` processes under stress: SIGKILL mid-pipeline, SIGTERM with a full
prefetch buffer, a broker restart (on a private node: the shared broker serves other tests), an
adopted queue and passive mode's start-up error, the health endpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pika
import psycopg2
import pytest

from tests.support.http import Reply
from tests.support.private_rabbit import (  # noqa: F401 (fixtures)
    PrivateRabbit,
    private_rabbit_fixture,
    private_stack_fixture,
)
from tests.support.smtp import Behaviour
from tests.support.stack import TEMPLATE, Stack, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(request_id: str, address: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": address,
        "variables": {"name": "Ada", "link": "l"},
    }


def test_killed_between_claim_and_send_is_delivered_once_after_restart(stack: Stack) -> None:
    request_id = f"kill-{uuid.uuid4().hex[:8]}"
    # The first template fetch hangs: the worker has claimed the request and is mid-pipeline.
    stack.http.route(
        "GET",
        "/api/v1/templates/slow",
        Reply(200, {"data": TEMPLATE}, delay=30),
        Reply(200, {"data": TEMPLATE}),
    )
    overrides: dict[str, Any] = {"lease_seconds": 2, "http_timeout": 60, "retry_delays": [0.5, 1.0]}
    with stack.spawn(**overrides) as first:
        stack.publish({**message(request_id, "once@example.com"), "template_code": "slow"})
        wait_for(lambda: stack.status(request_id) == "sending", 20, "the claim")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert stack.smtp.messages == []
    with stack.spawn(**overrides):
        wait_for(lambda: stack.status(request_id) == "sent", 30, "delivery after restart")
        wait_for(stack.idle, 10)
    assert len(stack.emails_to("once@example.com")) == 1
    events = [
        e["event"]
        for e in stack.query(
            "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request_id
        )
    ]
    assert "taken_over" in events


def test_sigterm_drains_in_flight_work_and_exits_zero(stack: Stack) -> None:
    ids = [f"term-{n}-{uuid.uuid4().hex[:6]}" for n in range(20)]
    stack.smtp.enqueue(*[Behaviour(delay=0.2)] * 20)
    with stack.spawn(concurrency=2, prefetch=10) as process:
        for n, request_id in enumerate(ids):
            stack.publish(message(request_id, f"t{n}@example.com"))
        wait_for(lambda: len(stack.smtp.messages) >= 2, 20, "the first sends")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    sent = sum(stack.status(r) == "sent" for r in ids)
    assert 2 <= sent < 20
    assert stack.queued() == 20 - sent  # nothing stuck unacked, nothing lost
    with stack.spawn():
        wait_for(lambda: all(stack.status(r) == "sent" for r in ids), 30)
    assert len(stack.smtp.messages) == 20


def consumers(stack: Stack, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


def test_broker_restart_mid_run_loses_and_duplicates_nothing(
    private_rabbit: PrivateRabbit, private_stack: Stack
) -> None:
    stack = private_stack
    before = [f"b-{n}-{uuid.uuid4().hex[:6]}" for n in range(10)]
    after = [f"a-{n}-{uuid.uuid4().hex[:6]}" for n in range(10)]
    worker = stack.start_worker()
    for n, request_id in enumerate(before):
        stack.publish(message(request_id, f"b{n}@example.com"))
    private_rabbit.stop_app()
    try:
        wait_for(lambda: not worker.consumer.consuming, 10, "the worker to notice")
    finally:
        private_rabbit.start_app()
    wait_for(lambda: worker.consumer.consuming, 60, "the worker to reconnect")
    for n, request_id in enumerate(after):
        stack.publish(message(request_id, f"a{n}@example.com"))
    wait_for(lambda: all(stack.status(r) == "sent" for r in before + after), 60)
    wait_for(stack.idle, 20)
    addresses = [rcpt for m in stack.smtp.messages for rcpt in m.rcpt_tos]
    assert sorted(addresses) == sorted(
        [f"b{n}@example.com" for n in range(10)] + [f"a{n}@example.com" for n in range(10)]
    )


def test_an_existing_queue_is_adopted_and_passive_mode_names_what_is_missing(
    stack: Stack, tmp_path: Path
) -> None:
    queue = f"{stack.prefix}.gateway.queue"
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    connection.channel().queue_declare(queue, durable=True)  # classic, no arguments
    connection.close()
    try:
        log = tmp_path / "worker.log"
        with stack.spawn("run", email_queue=queue, log=log, http_port=free_port()) as process:
            wait_for(lambda: consumers(stack, queue) == 1 or process.poll() is not None, 30)
            assert process.poll() is None  # it used to exit 3 on the 406
        (line,) = [json.loads(x) for x in log.read_text().splitlines() if '"topology"' in x]
        (found,) = [item for item in line["topology"] if item["name"] == queue]
        assert found["status"] == "adopted" and found["found"]["type"] == "classic"
        assert "type: found classic, wanted quorum" in found["differs"]
        missing = f"{stack.prefix}.missing.queue"
        log = tmp_path / "passive.log"
        with stack.spawn(
            "run", email_queue=missing, passive_topology=True, http_port=free_port(), log=log
        ) as passive:
            assert passive.wait(30) == 3
        assert missing in log.read_text() and "rabbitmqadmin declare queue" in log.read_text()
        with stack.spawn(
            "run", email_queue=queue, passive_topology=True, http_port=free_port()
        ) as passive:
            wait_for(lambda: consumers(stack, queue) == 1 or passive.poll() is not None, 30)
            assert passive.poll() is None  # passive mode accepts the existing queue
            assert consumers(stack, queue) == 1  # ... and consumes from it
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
        connection.channel().queue_delete(queue)
        connection.close()


def test_health_and_readiness_endpoints(stack: Stack) -> None:
    port = free_port()
    with stack.spawn(http_port=port) as process:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, 20, "readiness")
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_bad_setting_stops_start_up_naming_it(stack: Stack) -> None:
    env = {**os.environ, "EMAIL_WORKER_SMTP_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "email_worker", "run"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"EMAIL_WORKER_SMTP_PORT" in result.stderr


def test_a_schema_behind_the_worker_stops_start_up_naming_migrate(
    stack: Stack, tmp_path: Path
) -> None:
    admin = psycopg2.connect(stack.database_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:  # as if this version's migration had not been run
            cur.execute("DELETE FROM schema_migrations WHERE version = '002_batched_ledger'")
        log = tmp_path / "worker.log"
        with stack.spawn(log=log) as process:
            assert process.wait(30) == 4
        output = log.read_text()
        assert "002_batched_ledger" in output and "email-worker migrate" in output
    finally:
        with admin.cursor() as cur:
            cur.execute("INSERT INTO schema_migrations (version) VALUES ('002_batched_ledger')")
        admin.close()
