"""The whole worker on real services, for end-to-end tests: a fresh database, topology names
unique to the test, a real SMTP server and a real HTTP server playing the template service,
the user service and the gateway's callback endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import psycopg2
import psycopg2.extras
import pytest

from email_worker.app import Worker, declare_topology
from email_worker.config import Settings
from email_worker.dlq.records import DeadLetterRecord, browse
from email_worker.ports import Notifier
from tests.support.http import FakeHttpServer, Reply
from tests.support.ledger_check import (
    LedgerCheck,
    Report,
    callbacks_from,
    copies_from,
    wait_settled,
)
from tests.support.smtp import SmtpTestServer

CALLBACK_PATH = "/api/v1/email/status/"
TEMPLATE = {"subject": "Hello {{ name }}", "html_body": "<p>Hi {{ name }}, {{ link }}</p>"}


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class Stack:
    def __init__(
        self,
        database_url: str,
        amqp_url: str,
        prefix: str,
        smtp: SmtpTestServer,
        http: FakeHttpServer,
    ) -> None:
        self.database_url, self.amqp_url, self.prefix = database_url, amqp_url, prefix
        self.smtp, self.http = smtp, http
        self.workers: list[tuple[Worker, threading.Thread]] = []
        self.queues: set[str] = set()
        http.route(
            "GET", "/api/v1/templates/welcome", Reply(200, {"success": True, "data": TEMPLATE})
        )
        http.route("POST", CALLBACK_PATH, Reply(200, {"success": True}))

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": self.amqp_url,
            "database_url": self.database_url,
            "exchange": f"{self.prefix}.notifications.direct",
            "email_queue": f"{self.prefix}.email.queue",
            "failed_queue": f"{self.prefix}.failed.queue",
            "retry_queue_prefix": f"{self.prefix}.email.retry",
            "callback_queue": f"{self.prefix}.email.callbacks",
            "routing_keys": ["email", "email.queue"],
            "retry_delays": [0.3, 0.6],
            "max_attempts": 3,
            "smtp_host": "127.0.0.1",
            "smtp_port": self.smtp.port,
            "smtp_timeout": 5,
            "template_service_url": self.http.url,
            "user_service_url": self.http.url,
            "callback_url": self.http.url + CALLBACK_PATH,
            "http_port": 0,
            "breaker_reset_seconds": 1.0,
            "breaker_fail_max": 3,
            "lease_seconds": 5,
            "drain_seconds": 10,
            # CONCURRENCY, PREFETCH and SMTP_CONNECTIONS stay at the shipped defaults: the
            # suite exercises the in-flight counts that production runs.
        }
        values.update(overrides)
        settings = Settings(**values)
        # Tests override the names and delays: remember every queue so cleanup finds it.
        self.queues.update({settings.email_queue, settings.failed_queue, settings.callback_queue})
        self.queues.update(settings.retry_queue_name(d) for d in settings.retry_delays)
        self.queues.update([settings.lane_queue] if settings.lane_queue else [])
        return settings

    def environment(self, **overrides: Any) -> dict[str, str]:
        """The same settings as ``EMAIL_WORKER_*`` variables (the standard ``OTEL_*`` ones
        under their own names), for subprocess workers."""
        settings = self.settings(**overrides)
        env: dict[str, str] = {}
        for name, value in settings.model_dump().items():
            if value is None:
                continue
            raw = getattr(getattr(settings, name), "get_secret_value", lambda v=value: v)()
            if isinstance(raw, list):
                raw = ",".join(str(v) for v in raw)
            elif isinstance(raw, dict):  # QUEUE_ARGUMENTS: a JSON object
                raw = json.dumps(raw)
            variable = name.upper() if name.startswith("otel_") else f"EMAIL_WORKER_{name.upper()}"
            env[variable] = str(raw)
        return env

    @contextmanager
    def spawn(
        self, *args: str, log: Path | None = None, **overrides: Any
    ) -> Iterator[subprocess.Popen[bytes]]:
        """``python -m email_worker run`` (or ``args``) as a subprocess with this stack's
        settings; its JSON log lines go to ``log`` (else discarded). Killed on exit."""
        env = {**os.environ, **self.environment(**overrides)}
        sink = log.open("ab") if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "email_worker", *(args or ("run",))],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            if not isinstance(sink, int):
                sink.close()

    def start_worker(self, notifier: Notifier | None = None, **overrides: Any) -> Worker:
        from email_worker.app.build import inline_notifier

        settings = self.settings(**overrides)
        worker = Worker(settings, notifier=notifier or inline_notifier(settings))
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
        thread.start()
        self.workers.append((worker, thread))
        wait_for(lambda: worker.consumer.consuming, 20, "the worker to consume")
        return worker

    def stop_workers(self) -> None:
        for worker, thread in self.workers:
            worker.stop()
            thread.join(30)
        self.workers.clear()

    def publish(
        self,
        message: dict[str, Any] | bytes,
        *,
        routing_key: str = "email",
        exchange: str | None = None,
        **properties: Any,
    ) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        exchange = f"{self.prefix}.notifications.direct" if exchange is None else exchange
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(
                exchange,
                routing_key,
                body,
                pika.BasicProperties(
                    delivery_mode=2, content_type="application/json", **properties
                ),
                mandatory=True,
            )
        finally:
            connection.close()

    def queued(self) -> int:
        """Messages ready in the email queue, the delay queues and the priority lane."""
        settings = self.settings()
        names = [settings.email_queue] + [
            settings.retry_queue_name(d) for d in settings.retry_delays
        ]
        names += [settings.lane_queue] if settings.lane_queue else []
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            return sum(channel.queue_declare(n, passive=True).method.message_count for n in names)
        finally:
            connection.close()

    def idle(self) -> bool:
        return all(w.consumer.in_flight == 0 for w, _ in self.workers) and self.queued() == 0

    def dead_letters(self) -> list[DeadLetterRecord]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            return list(browse(connection, f"{self.prefix}.failed.queue", limit=1000))
        finally:
            connection.close()

    def dead_letter(self, request_id: str | None, timeout: float = 20) -> DeadLetterRecord:
        found: list[DeadLetterRecord] = []

        def arrived() -> bool:
            found[:] = [r for r in self.dead_letters() if r.headers.request_id == request_id]
            return bool(found)

        wait_for(arrived, timeout, f"a dead letter for {request_id}")
        return found[0]

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with (
            psycopg2.connect(self.database_url) as conn,
            conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
        ):
            cur.execute(sql, args)
            rows = [dict(r) for r in cur.fetchall()]
        conn.close()
        return rows

    def status(self, request_id: str) -> str | None:
        rows = self.query("SELECT status FROM email_requests WHERE request_id = %s", request_id)
        return rows[0]["status"] if rows else None

    def callbacks(self, notification_id: str) -> list[dict[str, Any]]:
        return [
            s.json()
            for s in self.http.seen("POST", CALLBACK_PATH)
            if s.json().get("notification_id") == notification_id
        ]

    def emails_to(self, address: str) -> list[Any]:
        return [m for m in self.smtp.messages if address in m.rcpt_tos]

    def ledger_check(self) -> LedgerCheck:
        """A ``LedgerCheck`` that publishes to this stack's exchange and reads its queues."""
        return LedgerCheck(
            amqp_url=self.amqp_url,
            database_url=self.database_url,
            exchange=f"{self.prefix}.notifications.direct",
            failed_queue=f"{self.prefix}.failed.queue",
        )

    def settle_and_check(
        self, check: LedgerCheck, timeout: float = 30, *, callbacks: bool = False
    ) -> Report:
        """Wait until every request of ``check`` has its final place and the queues are empty
        (or ``timeout``), then classify. With ``callbacks``, the gateway's POSTs count too
        (waited for until the report passes or the time is up)."""
        deadline = time.monotonic() + timeout
        wait_settled(check, self.idle, timeout)
        report = check.check(copies_from(self.smtp.messages))
        while callbacks and report.ok:  # callbacks lag behind the ledger: poll for them
            seen = callbacks_from(self.http.seen("POST", CALLBACK_PATH))
            with_callbacks = check.check(copies_from(self.smtp.messages), seen)
            if with_callbacks.ok or time.monotonic() >= deadline:
                return with_callbacks
            time.sleep(0.2)
        return report

    def cleanup(self) -> None:
        self.stop_workers()
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            settings = self.settings()
            for name in sorted(self.queues):
                channel.queue_delete(name)
            channel.exchange_delete(settings.exchange)
        finally:
            connection.close()


@pytest.fixture
def stack(bare_stack: Stack) -> Stack:
    """A ``Stack`` whose topology the worker declared, as ``email-worker run`` would."""
    declare_topology(bare_stack.settings())
    return bare_stack


@pytest.fixture
def bare_stack(
    database_url: str,
    amqp_url: str,
    unique_prefix: str,
    smtp_server: SmtpTestServer,
    http_server: FakeHttpServer,
) -> Iterator[Stack]:
    """A ``Stack`` whose broker holds nothing of it yet: the test decides who declares first
    (a gateway, ``email-worker run`` or ``email-worker topology apply``)."""
    from email_worker.ledger.db import Database
    from email_worker.ledger.migrations import migrate

    db = Database(database_url, pool_size=1)
    migrate(db)
    db.close()
    built = Stack(database_url, amqp_url, unique_prefix, smtp_server, http_server)
    built.settings()  # registers the queue names for the clean-up
    try:
        yield built
    finally:
        built.cleanup()
