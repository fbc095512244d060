"""``email-worker demo``: the whole pipeline on the local RabbitMQ and Postgres, with an
embedded SMTP sink, template service, user service and callback receiver.

Publishes ten messages shaped like real gateways' (and a few hostile ones), shows progress,
then what was delivered, retried and dead-lettered, and the callbacks the gateway received.
Uses its own ``demo.*`` queues, removed at the end; the ledger rows stay for inspection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from email_worker.app import Worker, declare_topology
from email_worker.app.build import inline_notifier
from email_worker.broker.topology import Connection, Properties, Topology, connector
from email_worker.config import Settings
from email_worker.demo.stack import DemoHttp, SmtpSink
from email_worker.dlq.records import browse
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate

GRACE, LINUS = "7f9c1a52-0001-4c1e-9a57-2f0b3c1d0001", "7f9c1a52-0002-4c1e-9a57-2f0b3c1d0002"


@dataclass(frozen=True)
class Scenario:
    label: str
    request_id: str | None
    body: bytes
    routing_key: str = "email"
    expect: str = "sent"


def _connect(settings: Settings) -> Connection:
    return connector(settings.amqp_url.get_secret_value(), 0, "email-worker demo")()


def _hng(request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "notification_type": "email",
        "template_code": "welcome",
        "variables": {"name": "friend", "link": "https://example.com/start", "meta": {}},
        "priority": 1,
        "metadata": {"batch_id": "demo"},
        **fields,
    }


def scenarios(run: str) -> list[Scenario]:
    def rid(n: int) -> str:
        return f"demo-{run}-{n}"

    def enc(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode()

    first = enc(_hng(rid(1), user_id=GRACE, variables={"link": "https://example.com/a"}))
    return [
        Scenario("HNG gateway, user_id via user service", rid(1), first),
        Scenario(
            "NestJS envelope, to_email",
            rid(2),
            enc(
                {
                    "pattern": "email",
                    "data": _hng(
                        rid(2), template_code="password_reset", to_email="ada@example.com"
                    ),
                }
            ),
            "email.queue",
        ),
        Scenario(
            "gateway envelope, embedded user",
            rid(3),
            enc(
                {
                    "success": True,
                    "data": _hng(rid(3), user={"email": "alan@example.com", "name": "Alan"}),
                }
            ),
        ),
        Scenario("duplicate of the first message", rid(1), first),
        Scenario("relay answers 451 once", rid(5), enc(_hng(rid(5), to_email="flaky@example.com"))),
        Scenario(
            "template does not exist",
            rid(6),
            enc(_hng(rid(6), template_code="no_such_template", to_email="ada@example.com")),
            expect="failed",
        ),
        Scenario(
            "user opted out of email", rid(7), enc(_hng(rid(7), user_id=LINUS)), expect="failed"
        ),
        Scenario(
            "header injection in a variable",
            rid(8),
            enc(
                _hng(
                    rid(8),
                    to_email="ada@example.com",
                    variables={"name": "Eve\r\nBcc: all@evil.example", "link": "x"},
                )
            ),
            expect="failed",
        ),
        Scenario(
            "invalid JSON",
            rid(9),
            b'{"request_id": "' + rid(9).encode() + b'", "templ',
            expect="failed",
        ),
        Scenario(
            "mailbox unavailable (550)",
            rid(10),
            enc(_hng(rid(10), to_email="bounce@example.com")),
            expect="failed",
        ),
    ]


def _demo_settings(settings: Settings, sink: SmtpSink, http: DemoHttp) -> Settings:
    return settings.model_copy(
        update={
            "exchange": "demo.notifications.direct",
            "email_queue": "demo.email.queue",
            "failed_queue": "demo.failed.queue",
            "retry_queue_prefix": "demo.email.retry",
            "callback_queue": "demo.email.callbacks",
            "retry_delays": [1.0, 2.0],
            "max_attempts": 3,
            "smtp_host": "127.0.0.1",
            "smtp_port": sink.port,
            "smtp_security": "none",
            "smtp_username": None,
            "smtp_password": None,
            "template_service_url": http.url,
            "user_service_url": http.url,
            "callback_url": f"{http.url}/api/v1/email/status/",
            "http_port": 0,
        }
    )


def _reset_queues(settings: Settings) -> None:
    topology = Topology.from_settings(settings)
    connection = _connect(settings)
    try:
        channel = connection.channel()
        for name in [
            topology.email_queue,
            topology.failed_queue,
            *(n for n, _ in topology.retry_queues),
            *([topology.lane_queue] if topology.lane_queue else []),
        ]:
            channel.queue_delete(name)
        channel.exchange_delete(topology.exchange)
    finally:
        connection.close()


def _publish(settings: Settings, items: list[Scenario]) -> None:
    connection = _connect(settings)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for item in items:
            channel.basic_publish(
                settings.exchange,
                item.routing_key,
                item.body,
                Properties(delivery_mode=2, content_type="application/json"),
                mandatory=True,
            )
    finally:
        connection.close()


def _statuses(db: Database, run: str) -> dict[str, dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT request_id, status, attempts, failure_reason FROM email_requests"
            " WHERE request_id LIKE %s",
            (f"demo-{run}-%",),
        )
        return {r[0]: {"status": r[1], "attempts": r[2], "reason": r[3]} for r in cur.fetchall()}


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    connection = _connect(settings)
    try:
        return [r.summary() for r in browse(connection, settings.failed_queue, limit=100)]
    finally:
        connection.close()


def run_demo(settings: Settings, *, timeout: float = 60.0) -> int:
    """Run the demo; returns 0 when every message ended where it should."""
    run = uuid.uuid4().hex[:6]
    # The worker's JSON outcome lines would bury the summary; errors still show.
    logging.getLogger().setLevel(logging.ERROR)
    sink, http = SmtpSink(flaky={"flaky@example.com"}).start(), DemoHttp().start()
    demo = _demo_settings(settings, sink, http)
    db = Database(demo.database_url.get_secret_value(), pool_size=2)
    migrate(db)
    _reset_queues(demo)
    declare_topology(demo)
    worker = Worker(demo, notifier=inline_notifier(demo))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    items = scenarios(run)
    print(f"demo run {run}: publishing {len(items)} messages to {demo.email_queue}")
    _publish(demo, items)
    ok = _watch(db, demo, run, items, timeout)
    worker.stop()
    thread.join(30)
    _report(db, demo, run, items, sink, http)
    _reset_queues(demo)
    db.close()
    sink.stop()
    http.stop()
    print("\nresult:", "every message ended where expected" if ok else "NOT as expected")
    return 0 if ok else 1


def _watch(
    db: Database, settings: Settings, run: str, items: list[Scenario], timeout: float
) -> bool:
    expected_sent = {i.request_id for i in items if i.expect == "sent"}
    expected_dead = sum(1 for i in items if i.expect == "failed")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        rows = _statuses(db, run)
        counts = {
            s: sum(1 for r in rows.values() if r["status"] == s)
            for s in ("sent", "pending", "unknown", "failed")
        }
        dead = len(_dead_letters(settings))
        print(
            f"  t={time.monotonic() - started:4.1f}s  delivered {counts['sent']}  "
            f"retrying {counts['pending'] + counts['unknown']}  dead-lettered {dead}"
        )
        sent = {k for k, r in rows.items() if r["status"] == "sent"}
        if sent == expected_sent and dead == expected_dead:
            return True
        time.sleep(0.5)
    return False


def _report(
    db: Database,
    settings: Settings,
    run: str,
    items: list[Scenario],
    sink: SmtpSink,
    http: DemoHttp,
) -> None:
    rows = _statuses(db, run)
    print("\nmessages:")
    for item in items:
        row = rows.get(item.request_id or "", {})
        outcome = row.get("status", "no ledger row")
        extra = f" ({row['reason']})" if row.get("reason") else ""
        print(
            f"  {item.label:<40} {item.request_id!s:<18} {outcome}{extra}"
            f"  attempts={row.get('attempts', '-')}"
        )
    print(f"\nemails accepted by the SMTP sink: {len(sink.received)}")
    print("\ndead-letter queue (what `email-worker dlq list` shows):")
    for record in _dead_letters(settings):
        print(
            f"  {record['request_id']}\t{record['failure_reason']}\tattempts={record['attempts']}"
        )
    print("\nstatus callbacks received by the gateway:")
    for callback in http.callbacks:
        print(
            f"  {callback['notification_id']:<18} {callback['status']:<10}"
            f" {callback.get('error') or ''}"
        )
