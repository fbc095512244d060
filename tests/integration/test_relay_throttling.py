"""Per-relay pacing end to end (CONTRACT 12 and 16; docs/rate-limits.md "Several relays"): the
real worker on RabbitMQ and Postgres with two SMTP relays of the test's own.

- Relay A answers ``421 4.7.0`` to any message above 10 in a sliding second
  (``tests.support.throttling``), relay B accepts everything; no limit is configured. A's
  throttling slows A only: its turn moves further away than ``RATE_LIMIT_MAX_WAIT_SECONDS``
  and B takes the overflow at once. Every message is delivered once, none is dead-lettered,
  no attempt is spent (every retry in the ledger is a ``throttled`` deferral, no ``pending``
  callback), A's breaker never trips and A's refusals stay few.
- Relay A carries ``?rate=5``: A never holds more than 5 acceptances in any second, B takes
  the rest, and nothing waits in a delay queue.

The figures go to stdout (``pytest -s``) for the report.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from email_worker.app import Worker
from tests.support.ledger_check import LedgerCheck, callbacks_from, copies_from, wait_settled
from tests.support.ledger_classify import classify
from tests.support.stack import CALLBACK_PATH, Stack, wait_for
from tests.support.throttling import (  # noqa: F401 (fixture)
    ThrottlingSmtpServer,
    throttling_smtp_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MESSAGES = 300


@pytest.fixture(name="smtp_server")
def _relay_a(throttling_smtp: ThrottlingSmtpServer) -> ThrottlingSmtpServer:
    """The stack's own relay is relay A."""
    return throttling_smtp


@pytest.fixture(name="relay_b")
def _relay_b() -> Iterator[ThrottlingSmtpServer]:
    """Relay B: accepts everything, records when."""
    server = ThrottlingSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def name(server: ThrottlingSmtpServer) -> str:
    return f"smtp://127.0.0.1:{server.port}"


def publish(stack: Stack, label: str) -> LedgerCheck:
    check = stack.ledger_check()
    for n in range(MESSAGES):
        check.add(f"{label}-{n:04d}-{stack.prefix}")
    check.publish()
    return check


def settle(stack: Stack, check: LedgerCheck, *servers: ThrottlingSmtpServer) -> None:
    """All sent, settled, and each delivered exactly once across both relays, with its
    callbacks and no ``pending`` one for a throttling deferral."""
    wait_for(lambda: sent(stack) == MESSAGES, 90, f"{MESSAGES} messages sent")
    wait_settled(check, stack.idle, 20)
    deadline = time.monotonic() + 20
    while True:  # callbacks lag behind the ledger
        copies = copies_from([m for server in servers for m in server.messages])
        seen = callbacks_from(stack.http.seen("POST", CALLBACK_PATH))
        # The ledger's ``attempts`` counts spent attempts only (migration 011): a throttled
        # delivery shows 1, its deferrals excluded.
        report = classify(check.requests, check.observe(copies, seen))
        if report.ok or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == MESSAGES
    assert stack.dead_letters() == []


def sent(stack: Stack) -> int:
    rows = stack.query("SELECT count(*) AS n FROM email_requests WHERE status = 'sent'")
    return int(rows[0]["n"])


def ledger_figures(stack: Stack) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Retry events by reason, outbox rows by callback status, requests by relay."""
    retries = stack.query(
        "SELECT coalesce(reason, '') AS reason, count(*) AS n FROM email_events"
        " WHERE status = 'pending' GROUP BY 1"
    )
    callbacks = stack.query("SELECT status, count(*) AS n FROM callback_outbox GROUP BY 1")
    relays = stack.query("SELECT relay, count(*) AS n FROM email_requests GROUP BY 1")
    attempts = stack.query("SELECT attempts, count(*) AS n FROM email_requests GROUP BY 1")
    print(f"\nthe ledger's attempts column: {sorted((r['attempts'], r['n']) for r in attempts)}")
    return (
        {row["reason"]: int(row["n"]) for row in retries},
        {row["status"]: int(row["n"]) for row in callbacks},
        {row["relay"]: int(row["n"]) for row in relays},
    )


def sends(worker: Worker, relay: str, result: str) -> float:
    labels = {"relay": relay, "result": result}
    return worker.metrics.registry.get_sample_value("email_worker_sends_total", labels) or 0.0


def per_second(times: list[float], start: float) -> list[int]:
    counts = Counter(int(at - start) for at in times)
    return [counts.get(second, 0) for second in range(max(counts, default=-1) + 1)]


def per_tenth(times: list[float]) -> list[int]:
    counts = Counter(int((at - times[0]) * 10) for at in times)
    return [counts.get(tenth, 0) for tenth in range(max(counts, default=-1) + 1)]


def test_a_relay_throttling_at_10_slows_itself_only_and_the_other_relay_takes_the_overflow(
    stack: Stack, throttling_smtp: ThrottlingSmtpServer, relay_b: ThrottlingSmtpServer
) -> None:
    a, b = throttling_smtp, relay_b
    a.limit = 10
    worker = stack.start_worker(
        relays=f"{name(a)},{name(b)}",  # priority order: everything to A while it keeps up
        rate_limit_max_wait_seconds=1,
        retry_delays=[1.0, 5.0],
    )
    started = time.monotonic()
    check = publish(stack, "rt")
    settle(stack, check, a, b)
    took = time.monotonic() - started
    retries, callbacks, relays = ledger_figures(stack)
    refused = len(a.refused_at)
    print(
        f"\nA throttling at 10/s, B open, 1 worker: {MESSAGES} sent in {took:.1f} s; "
        f"A accepted {len(a.accepted_at)}, refused {refused}; B accepted {len(b.accepted_at)}; "
        f"retries {retries}; requests by relay {relays}\n"
        f"A per second: {per_second(a.accepted_at, started)}\n"
        f"B per second: {per_second(b.accepted_at, started)}\n"
        f"A's refusals by 100 ms after the first: {per_tenth(a.refused_at)}"
    )
    assert len(a.accepted_at) + len(b.accepted_at) == MESSAGES
    assert relays == {name(a): len(a.accepted_at), name(b): len(b.accepted_at)}
    assert len(b.accepted_at) > MESSAGES / 2  # the overflow: A takes about 10 a second
    assert set(retries) <= {"throttled"}  # A's refusals only: deferred, no attempt spent
    assert callbacks == {"delivered": MESSAGES}  # no pending callback
    # A's refusals: the sends already in flight to A when it first refused (up to one per
    # consumer thread), then a few while its route converged (a relay would have refused
    # about 290 of them without per-relay pacing).
    late = [at for at in a.refused_at if at - a.refused_at[0] > 1.0]
    assert refused < MESSAGES / 5 and len(late) <= 10
    assert worker.mailer.breaker_states() == {name(a): "closed", name(b): "closed"}
    assert sends(worker, name(a), "unavailable") == 0  # no failover: A never failed
    assert sends(worker, name(a), "throttled") == refused


def test_a_relays_own_rate_holds_and_the_other_relay_takes_the_rest(
    stack: Stack, throttling_smtp: ThrottlingSmtpServer, relay_b: ThrottlingSmtpServer
) -> None:
    a, b = throttling_smtp, relay_b  # A counts, refuses nothing
    stack.start_worker(relays=f"{name(a)}?rate=5,{name(b)}", rate_limit_max_wait_seconds=1)
    started = time.monotonic()
    check = publish(stack, "rr")
    settle(stack, check, a, b)
    retries, callbacks, relays = ledger_figures(stack)
    print(
        f"\nA with ?rate=5, B open, 1 worker: {MESSAGES} sent in "
        f"{time.monotonic() - started:.1f} s; A accepted {len(a.accepted_at)} (busiest second "
        f"{a.busiest_second()}), B accepted {len(b.accepted_at)}; retries {retries}"
    )
    assert 0 < len(a.accepted_at) < MESSAGES / 2
    assert a.busiest_second() <= 5
    assert relays == {name(a): len(a.accepted_at), name(b): len(b.accepted_at)}
    assert retries == {} and callbacks == {"delivered": MESSAGES}  # B was always there
