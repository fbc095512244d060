"""The gateway's callback endpoint down for a while (connections refused), then answering 500,
429 with ``Retry-After``, 410, slowly, and finally 200. Emails go out regardless; every request
ends with its final status at the gateway except the one answered 410 Gone (a final 4xx: its
row is rejected after that one try); no status ever moves backwards. Callbacks run on the
``InlineNotifier`` path with a dispatcher whose backoff draws its minimum (1 s) and a re-drive
loop doing what ``email-worker beat`` does."""

from __future__ import annotations

import random
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.inline import InlineNotifier
from email_worker.callbacks.sender import CallbackHttp
from email_worker.ledger.db import Database
from tests.support.http import FakeHttpServer, Reply
from tests.support.ledger_check import callbacks_from, copies_from
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration
SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLWZhdWx0LXRlc3Q="  # Standard Webhooks form


class MinimalBackoff(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a  # the dispatcher floors it at its 1 s minimum


@pytest.fixture
def dispatcher(stack: Stack) -> Iterator[CallbackDispatcher]:
    db = Database(stack.database_url, pool_size=4)
    http = CallbackHttp(timeout=1.0)
    yield CallbackDispatcher(
        db, http, secret=SECRET, lease_seconds=2, max_age_hours=1, rng=MinimalBackoff()
    )
    http.close()
    db.close()


@pytest.fixture
def redrive(dispatcher: CallbackDispatcher) -> Iterator[None]:
    """Beat's re-drive, every 0.3 s (rows become due after their backoff)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.3):
            for outbox_id in dispatcher.due(100):
                dispatcher.deliver(outbox_id)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_callback_endpoint_faults_then_back(
    stack: Stack, dispatcher: CallbackDispatcher, redrive: None
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
    check = stack.ledger_check()
    for _ in range(4):
        check.add(f"cb-{uuid.uuid4().hex[:6]}")
    notifier = InlineNotifier(dispatcher)
    stack.start_worker(notifier=notifier, callback_url=url)
    check.publish()
    wait_for(check.settled, 20, "the emails, whatever the gateway does")
    # The gateway is down: every row has failed at least once and is still pending.
    wait_for(lambda: all(r["attempts"] >= 1 for r in outbox(stack)), 10, "refused attempts")
    assert all(r["state"] == "pending" for r in outbox(stack))
    gateway = FakeHttpServer(port)
    gateway.route(
        "POST",
        CALLBACK_PATH,
        Reply(500),
        Reply(429, headers={"Retry-After": "1"}),
        Reply(410),
        Reply(200, delay=1.5),  # slower than the client's timeout: retried
        Reply(200),
    )
    gateway.start()
    try:
        wait_for(lambda: settled(stack), 30, "every row delivered or rejected")
        states = sorted(r["state"] for r in outbox(stack))
        assert states == ["delivered", "delivered", "delivered", "rejected"]
        gone = next(r["request_id"] for r in outbox(stack) if r["state"] == "rejected")
        seen = callbacks_from(gateway.seen("POST", CALLBACK_PATH))
        report = check.check(copies_from(stack.smtp.messages), seen)
        assert report.ok, report.summary()
        assert {s for k, s in seen if k == gone} == {"delivered"}  # 410: posted once, final
        assert all("webhook-signature" in s.headers for s in gateway.seen())
    finally:
        gateway.stop()


def outbox(stack: Stack) -> list[dict[str, Any]]:
    return stack.query("SELECT request_id, state, attempts FROM callback_outbox ORDER BY id")


def settled(stack: Stack) -> bool:
    return all(r["state"] in ("delivered", "rejected") for r in outbox(stack))
