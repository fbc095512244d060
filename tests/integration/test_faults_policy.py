"""Nothing lost, nothing duplicated with the delivery policies (CONTRACT 12, 14, 15, 16) under
injected faults, on a RabbitMQ node and a PostgreSQL server of this module's own.

Two ``email-worker run`` replicas, an ``email-worker callbacks`` worker and ``email-worker
beat`` (processes, as deployed) send a few hundred requests mixing plain sends, scheduled sends,
expiring ones, cancels, suppressed and refused recipients (``tests/support/policy_mix.py``)
through two relays: A refuses connections part of the time (``tests/support/flapping.py``), B
is always up, and both lead to one relay that throttles above 12 messages a second while
``RATE_LIMIT`` is 30. Meanwhile one fault each: ``kill -9`` of each replica in turn (each
restarted), a restart of the RabbitMQ node while sends are held and retries wait in the delay
queues, a restart of PostgreSQL likewise.

The ledger checker then classifies every request and the test asserts: none lost, no duplicate
but after an ambiguous outcome (one Message-ID), each with its expected outcome (a dead letter
with its reason, ``cancelled``, ``expired``...), no scheduled send received before its send_at
by the relay's clock, throttling spent no attempt and sent no ``pending`` callback, and the
gateway's callbacks end in the final state and never move backwards. The counts per outcome
and per kind are printed (``MEASURED``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import psycopg2
import pytest
from psycopg2 import sql

from email_worker.app import declare_topology
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from tests.support.flapping import FlappingRelay
from tests.support.http import FakeHttpServer, Seen
from tests.support.ledger_check import (
    Report,
    callbacks_from,
    copies_from,
    wait_settled,
)
from tests.support.policy_mix import PolicyMix, breakdown, explain
from tests.support.private_postgres import (  # noqa: F401 (fixture)
    PrivatePostgres,
    private_postgres_fixture,
)
from tests.support.private_rabbit import (  # noqa: F401 (fixture)
    PrivateRabbit,
    private_rabbit_fixture,
)
from tests.support.replicas import Replicas
from tests.support.services import admin_statement
from tests.support.stack import CALLBACK_PATH, Stack, wait_for
from tests.support.throttling import ThrottlingSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

REQUESTS = 200
RELAY_LIMIT = 12  # messages a second the relay accepts before it answers 421 4.7.0
SETTLE_SECONDS = 60
# Lost callback hand-overs wait out the ledger's 30 s grace before beat re-drives them.
CALLBACK_SECONDS = 45
SETTINGS: dict[str, Any] = {
    "retry_delays": [1.0, 2.0],
    "max_attempts": 4,
    "lease_seconds": 4,
    "concurrency": 8,
    "prefetch": 16,
    "rate_limit": 30,
    "rate_limit_max_wait_seconds": 1,
    "breaker_fail_max": 3,
    "breaker_reset_seconds": 1.0,
    "pause_seconds": 2,
    "schedule_poll_seconds": 0.5,
    "callback_lease_seconds": 3,
    "beat_interval_seconds": 1,
    "retry_overdue_seconds": 20,
    "callback_field_names": "attempts:attempts",
}


@dataclass
class Policy:
    """One scenario's world: the stack, its relays, its processes and its requests."""

    stack: Stack
    relay: ThrottlingSmtpServer
    flapping: FlappingRelay
    replicas: Replicas
    mix: PolicyMix
    settings: dict[str, Any]
    at_fault: str = ""  # what was held and delayed when the fault struck

    def count(self, status: str, due: bool = False) -> int:
        """Requests of the mix in ``status`` (``due``: whose retry or release is due);
        -1 while the database does not answer."""
        query = "SELECT count(*) AS n FROM email_requests WHERE status = %s"
        query += " AND retry_due_at <= now()" if due else ""
        try:
            return int(self.stack.query(query, status)[0]["n"])
        except psycopg2.Error:
            return -1

    def status(self, key: str) -> str | None:
        try:
            return self.stack.status(key)
        except psycopg2.Error:
            return None

    def queued(self) -> tuple[int, int] | None:
        """Messages in the email queue and in the delay queues; None while the broker is
        away."""
        settings = self.stack.settings(**self.settings)
        names = [settings.email_queue, *map(settings.retry_queue_name, settings.retry_delays)]
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.stack.amqp_url))
        except pika.exceptions.AMQPError:
            return None
        try:
            channel = connection.channel()
            counts = [channel.queue_declare(n, passive=True).method.message_count for n in names]
        except pika.exceptions.AMQPError:
            return None
        finally:
            if connection.is_open:
                connection.close()
        return counts[0], sum(counts[1:])

    def idle(self) -> bool:
        return self.queued() == (0, 0)

    def held_and_delayed(self) -> bool:
        """At least 10 sends held in the ledger and a retry waiting in a delay queue; the
        figures are kept for the report."""
        queued = self.queued()
        self.at_fault = f"{self.count('scheduled')} held, {queued and queued[1]} delayed"
        return self.count("scheduled") >= 10 and queued is not None and queued[1] >= 1

    def wait_consuming(self) -> None:
        settings = self.stack.settings(**self.settings)
        self.replicas.wait_consuming(settings.email_queue, settings.callback_queue, 60)


@pytest.fixture
def policy(
    private_rabbit: PrivateRabbit,
    private_postgres: PrivatePostgres,
    unique_prefix: str,
    http_server: FakeHttpServer,
    tmp_path: Path,
) -> Iterator[Policy]:
    name = f"ew_test_{unique_prefix}"
    admin_statement(
        private_postgres.url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    )
    database_url = private_postgres.url.rpartition("/")[0] + f"/{name}"
    db = Database(database_url, pool_size=1)
    migrate(db)
    db.close()
    relay = ThrottlingSmtpServer(limit=RELAY_LIMIT)
    relay.start()
    flapping = FlappingRelay(relay.port)
    flapping.cycle(up_seconds=2.5, down_seconds=1.5)
    stack = Stack(database_url, private_rabbit.amqp_url, unique_prefix, relay, http_server)
    relays = f"smtp://127.0.0.1:{flapping.port},smtp://127.0.0.1:{relay.port}"
    settings = SETTINGS | {"relays": relays}
    declare_topology(stack.settings(**settings))
    replicas = Replicas(stack.environment(**settings), stack.amqp_url, tmp_path)
    mix = PolicyMix(stack.ledger_check(), relay, database_url, uuid.uuid4().hex[:6])
    try:
        yield Policy(stack, relay, flapping, replicas, mix, settings)
    finally:
        replicas.stop()
        flapping.stop()
        relay.stop()
        stack.cleanup()
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin_statement(private_postgres.url, drop)


def run_scenario(policy: Policy, label: str, fault: Callable[[Policy], None]) -> Report:
    """Start the processes, publish the mix, cancel the held ``cancel`` requests while
    ``fault`` runs, wait until everything settled, and classify (callbacks included)."""
    policy.replicas.start()
    policy.wait_consuming()
    began = time.monotonic()
    policy.mix.publish(REQUESTS)
    environment = policy.stack.environment(**policy.settings)
    with ThreadPoolExecutor(1) as pool:
        cancelled = pool.submit(policy.mix.cancel_held, environment, policy.status, 60)
        fault(policy)
        cancelled.result()
    check = policy.mix.check
    settled = wait_settled(check, policy.idle, SETTLE_SECONDS)
    settled_in = time.monotonic() - began
    deadline = time.monotonic() + CALLBACK_SECONDS
    while True:  # callbacks lag behind the ledger (a lost hand-over waits for beat)
        copies = copies_from(policy.relay.messages)
        posts = policy.stack.http.seen("POST", CALLBACK_PATH)
        report = check.check(copies, callbacks_from(posts, distinct=True))
        if report.ok or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    backup = f"smtp://127.0.0.1:{policy.relay.port}"
    reposted = len(posts) - len(callbacks_from(posts, distinct=True))
    print(
        f"\nMEASURED {label}: {breakdown(policy.mix, report, policy.stack.database_url, backup)}"
        f"; relay A down {policy.flapping.down_phases} times, {policy.flapping.cut} cut;"
        f" 421s {len(policy.relay.refused_at)}; callbacks posted again {reposted}; settled in"
        f" {settled_in:.0f} s, callbacks {time.monotonic() - began - settled_in:.0f} s later"
        + (f"; at the fault {policy.at_fault}" if policy.at_fault else "")
    )
    assert settled, f"not settled in {SETTLE_SECONDS} s\n{report.summary()}"
    assert report.ok, "\n".join(
        [report.summary(), explain(report, policy.stack.database_url), *posted(report, posts)]
    )
    return report


def posted(report: Report, posts: list[Seen]) -> list[str]:
    """The callbacks each failing request's gateway got: status, error, webhook-id."""
    bad = {v.key for v in report.verdicts if v.outcome in ("lost", "unexpected")}
    lines = []
    for post in posts:
        body = post.json()
        if body.get("notification_id") in bad:
            event = {k.lower(): v for k, v in post.headers.items()}.get("webhook-id")
            lines.append(f"{body['notification_id']}: {body['status']} {body['error']} {event}")
    return lines


def wait_sent(policy: Policy, share: float) -> None:
    wanted = int(REQUESTS * share)
    wait_for(lambda: policy.count("sent") >= wanted, 60, f"{wanted} requests sent")


def test_kill_9_of_each_run_replica_mid_stream(policy: Policy) -> None:
    def fault(p: Policy) -> None:
        for name, share in (("run-1", 0.2), ("run-2", 0.45)):
            wait_sent(p, share)
            p.replicas.kill(name)
            p.replicas.start(name)
        p.wait_consuming()

    run_scenario(policy, "kill -9 of each run replica", fault)
    assert policy.replicas.kills == 2


def test_broker_restart_with_held_sends_and_retries_in_delay_queues(
    policy: Policy, private_rabbit: PrivateRabbit
) -> None:
    def fault(p: Policy) -> None:
        wait_for(p.held_and_delayed, 30, "held sends and retries in the delay queues")
        private_rabbit.stop_app()
        try:
            # Down until a held send and a retry came due with no broker to take them.
            wait_for(lambda: p.count("scheduled", due=True) >= 1, 30, "a held send due")
        finally:
            private_rabbit.start_app()
        p.wait_consuming()

    run_scenario(policy, "RabbitMQ restart", fault)


def test_database_restart_with_held_sends_and_retries(
    policy: Policy, private_postgres: PrivatePostgres
) -> None:
    def fault(p: Policy) -> None:
        wait_for(p.held_and_delayed, 30, "held sends and retries in the delay queues")
        private_postgres.restart()

    run_scenario(policy, "PostgreSQL restart", fault)
