"""SMTP faults under the ledger checker: every reply a relay can give, a relay that is down, one
that never greets, one slower than the broker heartbeat, and our own broken TLS or credentials
(which must pause consumption, never dead-letter the backlog)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.ledger_check import DELIVERED
from tests.support.smtp import Behaviour, SelfSignedCert, SmtpTestServer
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


# (label, scripted behaviours for the recipient, expected end)
REPLIES: list[tuple[str, tuple[Behaviour, ...], str]] = [
    ("ok", (), DELIVERED),
    ("r421", (Behaviour(rcpt="421 4.4.2 closing"),), DELIVERED),
    ("r451", (Behaviour(rcpt="451 4.3.0 try later"),), DELIVERED),
    ("r452", (Behaviour(rcpt="452 4.2.2 mailbox full"),), DELIVERED),
    ("d451", (Behaviour(data="451 4.3.0 local error"),), DELIVERED),
    ("r550", (Behaviour(rcpt="550 5.1.1 no such user"),), "recipient_rejected"),
    ("d554", (Behaviour(data="554 5.6.0 content rejected"),), "message_rejected"),
    ("drop", (Behaviour(drop=True),), DELIVERED),  # after the final dot: an allowed duplicate
    ("slow", (Behaviour(delay=1.0),), DELIVERED),
]


def test_every_relay_reply_ends_in_one_place(stack: Stack) -> None:
    check = stack.ledger_check()
    for label, behaviours, expect in REPLIES:
        request = check.add(key(label), expect=expect)
        assert request.recipient is not None
        stack.smtp.script(request.recipient, *behaviours)
    stack.start_worker()
    check.publish()
    report = stack.settle_and_check(check, 30, callbacks=True)
    assert report.ok, report.summary()
    verdicts = {v.key.split("-")[0]: v for v in report.verdicts}
    assert verdicts["drop"].outcome == "duplicated" and verdicts["drop"].copies == 2
    assert all(verdicts[k].outcome == "delivered_once" for k in ("ok", "r421", "d451", "slow"))
    assert verdicts["r550"].outcome == "dead_lettered"
    assert report.counts["dead_lettered"] == 2 and report.counts["duplicated"] == 1


def test_relay_down_then_back_delivers_everything_once(stack: Stack) -> None:
    stack.smtp.stop()  # connections are refused
    check = stack.ledger_check()
    keys = [check.add(key("down")).key for _ in range(4)]
    stack.start_worker(retry_delays=[1.0, 2.0], max_attempts=6)
    check.publish()
    wait_for(lambda: all(stack.status(k) == "pending" for k in keys), 20, "pending retries")
    assert stack.dead_letters() == []
    stack.smtp.start()  # the same port again
    report = stack.settle_and_check(check, 30)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 4


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A port that accepts connections and never says a word (no SMTP greeting)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_tarpit_times_out_and_dead_letters_after_the_attempts(stack: Stack, tarpit: int) -> None:
    check = stack.ledger_check()
    for _ in range(3):
        check.add(key("tarpit"), expect="retries_exhausted")
    stack.start_worker(smtp_port=tarpit, smtp_timeout=0.5, max_attempts=2, retry_delays=[0.3])
    started = time.monotonic()
    check.publish()
    report = stack.settle_and_check(check, 25)
    assert report.ok, report.summary()
    assert time.monotonic() - started < 20  # the timeout freed the worker threads
    assert all("smtp_unavailable" in r.headers.failure_detail for r in stack.dead_letters())


def test_reply_slower_than_the_heartbeat_keeps_the_connection(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    check = stack.ledger_check()
    request = check.add(key("slow"))
    assert request.recipient is not None
    stack.smtp.script(request.recipient, Behaviour(delay=5.0))
    caplog.set_level(logging.WARNING, logger="email_worker.broker.consumer")
    stack.start_worker(heartbeat_seconds=2, smtp_timeout=15)
    check.publish()
    report = stack.settle_and_check(check, 25)
    assert report.ok, report.summary()
    assert report.of(request.key).outcome == "delivered_once"
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]


def _no_starttls(factory: Callable[..., SmtpTestServer], cert: SelfSignedCert) -> tuple[Any, ...]:
    server = factory()
    return server, {"smtp_security": "starttls"}, {"smtp_security": "none"}


def _bad_cert(factory: Callable[..., SmtpTestServer], cert: SelfSignedCert) -> tuple[Any, ...]:
    server = factory(tls="starttls", cert=cert)
    fixed = {"smtp_security": "starttls", "smtp_ca_file": str(cert.cert)}
    return server, {"smtp_security": "starttls"}, fixed


def _auth(factory: Callable[..., SmtpTestServer], cert: SelfSignedCert) -> tuple[Any, ...]:
    server = factory(credentials=("user", "right"))
    wrong = {"smtp_username": "user", "smtp_password": "wrong"}
    return server, wrong, {**wrong, "smtp_password": "right"}


@pytest.mark.parametrize("setup", [_no_starttls, _bad_cert, _auth], ids=["no-tls", "cert", "535"])
def test_broken_tls_or_credentials_pause_and_keep_the_backlog(
    stack: Stack,
    smtp_server_factory: Callable[..., SmtpTestServer],
    smtp_cert: SelfSignedCert,
    setup: Callable[..., tuple[Any, ...]],
) -> None:
    server, broken, fixed = setup(smtp_server_factory, smtp_cert)
    stack.smtp = server
    check = stack.ledger_check()
    for _ in range(6):
        check.add(key("sys"))
    worker = stack.start_worker(smtp_port=server.port, pause_seconds=30, **broken)
    check.publish()
    wait_for(lambda: worker.consumer.paused, 15, "consumption to pause")
    wait_for(lambda: worker.consumer.in_flight == 0, 10, "in-flight work to settle")
    time.sleep(1.0)  # the retry copies expire back into the email queue: still not consumed
    assert stack.dead_letters() == []
    assert stack.queued() == 6
    assert server.messages == []
    assert not worker.readiness().ready
    stack.stop_workers()
    stack.start_worker(smtp_port=server.port, **fixed)  # the operator fixes the configuration
    report = stack.settle_and_check(check, 30)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 6
