"""Several relays on the real worker (RabbitMQ, Postgres, SMTP servers of the tests' own):
failover only when the first relay cannot have accepted the message, without spending an
attempt; never after a refusal or an ambiguous end; a recovered relay takes traffic again;
weights split the traffic; the relay is named in the ledger, the status API and the metrics,
and no password ever shows."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest

from email_worker.app import Worker
from tests.support.ledger_check import (
    LedgerCheck,
    Report,
    callbacks_from,
    copies_from,
    wait_settled,
)
from tests.support.refusing import (  # noqa: F401 - the fixture, registered by importing it
    GreetingRefuser,
    closed_port,
    greeting_refuser_fixture,
)
from tests.support.smtp import Behaviour, SmtpTestServer
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration

SmtpFactory = Callable[..., SmtpTestServer]


def url(port: int, credentials: str = "") -> str:
    return f"smtp://{credentials}127.0.0.1:{port}"


def name(port: int) -> str:
    return f"smtp://127.0.0.1:{port}"


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def settle(
    stack: Stack, check: LedgerCheck, servers: Sequence[SmtpTestServer], timeout: float = 30
) -> Report:
    """Every request in its final place, the copies of every relay and the callbacks seen."""
    deadline = time.monotonic() + timeout
    wait_settled(check, stack.idle, timeout)
    while True:
        copies = copies_from([m for server in servers for m in server.messages])
        seen = callbacks_from(stack.http.seen("POST", CALLBACK_PATH))
        report = check.check(copies, seen)
        if report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(0.2)


def rows(stack: Stack, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    found = stack.query(
        "SELECT request_id, status, attempts, relay FROM email_requests WHERE request_id = ANY(%s)",
        list(keys),
    )
    return {row["request_id"]: row for row in found}


def send_one(stack: Stack, recipient: str = "ann@example.com") -> str:
    request_id = key("one")
    variables = {"name": "Ada", "link": "https://example.com/x"}
    message = {"request_id": request_id, "template_code": "welcome", "to_email": recipient}
    stack.publish(message | {"variables": variables})
    return request_id


def sends(worker: Worker, relay: str, result: str) -> float:
    labels = {"relay": relay, "result": result}
    return worker.metrics.registry.get_sample_value("email_worker_sends_total", labels) or 0.0


def test_a_relay_refusing_connections_hands_everything_to_the_next_without_an_attempt(
    stack: Stack, smtp_server_factory: SmtpFactory
) -> None:
    down, b = closed_port(), smtp_server_factory()
    check = stack.ledger_check()
    keys = [check.add(key("over")).key for _ in range(8)]
    worker = stack.start_worker(relays=f"{url(down)},{url(b.port)}")
    check.publish()
    report = settle(stack, check, [b])
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 8
    ledger = rows(stack, keys)
    assert {(r["status"], r["attempts"], r["relay"]) for r in ledger.values()} == {
        ("sent", 1, name(b.port))
    }
    for k in keys:  # no `pending`: failing over spent nothing
        assert [c["status"] for c in stack.callbacks(k)] == ["delivered"]
    assert sends(worker, name(down), "unavailable") >= 1
    assert sends(worker, name(b.port), "sent") == 8


def test_a_421_greeting_or_a_refused_login_hands_the_message_over(
    stack: Stack, smtp_server_factory: SmtpFactory, greeting_refuser: GreetingRefuser
) -> None:
    locked = smtp_server_factory(credentials=("user", "right"))
    b = smtp_server_factory()
    check = stack.ledger_check()
    keys = [check.add(key("greet")).key for _ in range(6)]
    relays = [url(greeting_refuser.port), url(locked.port, "user:wrong@"), url(b.port)]
    worker = stack.start_worker(relays=",".join(relays), pause_seconds=30)
    check.publish()
    report = settle(stack, check, [locked, b])
    assert report.ok, report.summary()
    assert len(b.messages) == 6 and locked.messages == []
    assert greeting_refuser.refused >= 1 and locked.connections >= 1
    assert not worker.consumer.paused  # AUTH refused on one relay only: no pause
    assert {r["attempts"] for r in rows(stack, keys).values()} == {1}


def test_a_550_on_the_first_relay_never_reaches_the_second(
    stack: Stack, smtp_server_factory: SmtpFactory
) -> None:
    a, b = stack.smtp, smtp_server_factory()
    check = stack.ledger_check()
    request = check.add(key("r550"), expect="recipient_rejected")
    assert request.recipient is not None
    a.script(request.recipient, Behaviour(rcpt="550 5.1.1 no such user"))
    stack.start_worker(relays=f"{url(a.port)},{url(b.port)}")
    check.publish()
    report = settle(stack, check, [a, b])
    assert report.ok, report.summary()
    assert b.connections == 0 and b.messages == []
    row = rows(stack, [request.key])[request.key]
    assert (row["status"], row["relay"]) == ("failed", name(a.port))


def test_an_ambiguous_end_on_the_first_relay_never_reaches_the_second(
    stack: Stack, smtp_server_factory: SmtpFactory
) -> None:
    a, b = stack.smtp, smtp_server_factory()
    check = stack.ledger_check()
    request = check.add(key("drop"))
    assert request.recipient is not None
    a.script(request.recipient, Behaviour(drop=True))
    stack.start_worker(relays=f"{url(a.port)},{url(b.port)}")
    check.publish()
    report = settle(stack, check, [a, b])
    assert report.ok, report.summary()
    verdict = report.of(request.key)
    assert verdict.outcome == "duplicated" and verdict.copies == 2  # both at A: same Message-ID
    assert b.connections == 0
    events = stack.query(
        "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request.key
    )
    assert "unknown" in [e["event"] for e in events]


def test_a_recovered_relay_takes_the_traffic_again(
    stack: Stack, smtp_server_factory: SmtpFactory
) -> None:
    a, b = stack.smtp, smtp_server_factory()
    a.stop()  # refuses connections on its port
    worker = stack.start_worker(relays=f"{url(a.port)},{url(b.port)}", breaker_reset_seconds=0.5)
    first = [send_one(stack) for _ in range(4)]
    wait_for(lambda: all(stack.status(r) == "sent" for r in first), 20, "B to take them")
    assert len(b.messages) == 4 and worker.mailer.breaker_states()[name(a.port)] == "open"
    a.start()  # the same port again
    deadline = time.monotonic() + 20
    while not a.messages:  # one message at a time, until A's trial has taken one
        assert time.monotonic() < deadline, "A never took traffic again"
        probe = send_one(stack)
        wait_for(lambda: stack.status(probe) == "sent", 20, "a probe message")  # noqa: B023
    before = len(b.messages)
    rest = [send_one(stack) for _ in range(5)]
    wait_for(lambda: all(stack.status(r) == "sent" for r in rest), 20, "the rest")
    assert len(b.messages) == before  # priority: while A is healthy, B takes nothing
    assert {r["relay"] for r in rows(stack, rest).values()} == {name(a.port)}
    assert worker.mailer.breaker_states()[name(a.port)] == "closed"


def test_weights_split_the_traffic_as_configured(
    stack: Stack, smtp_server_factory: SmtpFactory
) -> None:
    a, b = stack.smtp, smtp_server_factory()
    check = stack.ledger_check()
    for _ in range(40):
        check.add(key("w"))
    stack.start_worker(relays=f"{url(a.port)}?weight=3,{url(b.port)}?weight=1")
    check.publish()
    report = settle(stack, check, [a, b])
    assert report.ok, report.summary()
    # Smooth weighted round robin is exact over whole cycles: 40 sends are 10 cycles of 3 + 1.
    assert (len(a.messages), len(b.messages)) == (30, 10)


def test_no_password_shows_in_names_metrics_logs_or_the_status_api(
    stack: Stack, smtp_server_factory: SmtpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    password = "Pw-" + uuid.uuid4().hex
    locked = smtp_server_factory(credentials=("user", password))
    down = closed_port()
    relays = f"{url(down, f'ann:{password}@')},{url(locked.port, f'user:{password}@')}"
    caplog.set_level(logging.DEBUG)
    worker = stack.start_worker(relays=relays, status_api_token="tok")
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 20, "the send through the second relay")
    assert len(locked.messages) == 1
    code, body, _ = worker.status_api()(f"/api/v1/notifications/{request_id}", "Bearer tok")
    assert code == 200 and body["data"]["relay"] == name(locked.port)
    exposition = generate_latest(worker.metrics.registry).decode()
    assert f'relay="{name(locked.port)}",result="sent"' in exposition
    readiness = worker.readiness()
    texts = {
        "status API": json.dumps(body),
        "metrics": exposition,
        "readiness": json.dumps(readiness.relays) + json.dumps(readiness.checks),
        "logs": "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
        "names": " ".join(worker.mailer.names),
    }
    assert name(down) in texts["logs"]  # the failover was logged, by name
    for where, text in texts.items():
        assert password not in text, where
