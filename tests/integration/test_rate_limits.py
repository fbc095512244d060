"""Rate limits shared by replicas and adaptive throttling, end to end (CONTRACT section 12): two
real ``email-worker run`` processes against an SMTP relay of the test's own that records when
it accepts each message (``tests.support.throttling``).

- ``RATE_LIMIT=20``: the relay never holds more than 20 accepted messages in any one second,
  and every message is delivered once with no attempt spent;
- no limit, a relay refusing above 30 a second with ``421 4.7.0``: the workers slow down by
  themselves; every message is delivered once, no attempt spent, nothing dead-lettered, and
  the refusals stay few (the count is printed).

"No attempt spent" is read from the ledger: every retry it recorded is a ``throttled``
deferral (the only kind that spends nothing: CONTRACT "Attempts"), and no ``pending`` callback
was written. The figures go to stdout (``pytest -s``) for the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.stack import Stack, wait_for
from tests.support.throttling import (  # noqa: F401 (fixture)
    ThrottlingSmtpServer,
    throttling_smtp_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MESSAGES = 300


@pytest.fixture(name="smtp_server")
def _relay(throttling_smtp: ThrottlingSmtpServer) -> ThrottlingSmtpServer:
    """The stack's relay is the throttling one."""
    return throttling_smtp


def consumers(stack: Stack) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        queue = stack.settings().email_queue
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


def sent(stack: Stack) -> int:
    rows = stack.query("SELECT count(*) AS n FROM email_requests WHERE status = 'sent'")
    return int(rows[0]["n"])


def retries_and_callbacks(stack: Stack) -> tuple[dict[str, int], dict[str, int]]:
    """Retry events by reason, and outbox rows by callback status."""
    retries = stack.query(
        "SELECT coalesce(reason, '') AS reason, count(*) AS n FROM email_events"
        " WHERE status = 'pending' GROUP BY 1"
    )
    callbacks = stack.query("SELECT status, count(*) AS n FROM callback_outbox GROUP BY 1")
    return (
        {row["reason"]: int(row["n"]) for row in retries},
        {row["status"]: int(row["n"]) for row in callbacks},
    )


def run_two_workers(stack: Stack, tmp_path: Path, **overrides: Any) -> float:
    """Publish ``MESSAGES`` requests to two ``run`` processes; return the seconds until all
    were sent. Asserts each was delivered exactly once and nothing was dead-lettered."""
    check = stack.ledger_check()
    for n in range(MESSAGES):
        check.add(f"rl-{n:04d}-{stack.prefix}")
    settings: dict[str, Any] = {"retry_delays": [1.0, 5.0], **overrides}
    with (
        stack.spawn(log=tmp_path / "first.log", **settings),
        stack.spawn(log=tmp_path / "second.log", **settings),
    ):
        wait_for(lambda: consumers(stack) == 2, 30, "both workers to consume")
        started = time.monotonic()
        check.publish()
        wait_for(lambda: sent(stack) == MESSAGES, 60, f"{MESSAGES} messages sent")
        took = time.monotonic() - started
        report = stack.settle_and_check(check, timeout=20)
    assert report.ok, report
    assert stack.dead_letters() == []
    return took


def test_two_replicas_with_rate_limit_20_never_put_more_than_20_in_any_second(
    stack: Stack, throttling_smtp: ThrottlingSmtpServer, tmp_path: Path
) -> None:
    took = run_two_workers(stack, tmp_path, rate_limit=20)
    accepted = throttling_smtp.accepted_at
    busiest = throttling_smtp.busiest_second()
    rate = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    # The shortest time that held 21 acceptances: over 1 s, no second held more than 20.
    tightest = min(later - first for first, later in zip(accepted, accepted[20:], strict=False))
    retries, callbacks = retries_and_callbacks(stack)
    print(
        f"\nRATE_LIMIT=20, 2 workers: {len(accepted)} accepted in {took:.1f} s, "
        f"{rate:.2f}/s from first to last, busiest second {busiest}, 21 acceptances took "
        f"{tightest:.3f} s at least, retries {retries}"
    )
    assert len(accepted) == MESSAGES
    assert busiest <= 20
    assert set(retries) <= {"throttled"}  # waits past RATE_LIMIT_MAX_WAIT only: no attempt
    assert callbacks == {"delivered": MESSAGES}  # no pending callback


def test_without_a_limit_two_replicas_converge_under_a_relay_that_throttles_at_30(
    stack: Stack, throttling_smtp: ThrottlingSmtpServer, tmp_path: Path
) -> None:
    throttling_smtp.limit = 30
    took = run_two_workers(stack, tmp_path)
    refused = len(throttling_smtp.refused_at)
    retries, callbacks = retries_and_callbacks(stack)
    print(
        f"\nno limit, relay throttling at 30/s, 2 workers: {MESSAGES} sent in {took:.1f} s, "
        f"{refused} refusals (421), retries {retries}"
    )
    accepted = throttling_smtp.accepted_at
    per_second = [0] * (int(accepted[-1] - accepted[0]) + 1)
    for at in accepted:
        per_second[int(at - accepted[0])] += 1
    print(f"accepted per second: {per_second}")
    assert len(throttling_smtp.accepted_at) == MESSAGES
    assert set(retries) == {"throttled"}  # every refusal deferred, none spent an attempt
    assert callbacks == {"delivered": MESSAGES}  # no pending callback
    assert refused < MESSAGES / 2
    # What the status API and the callbacks show: one spent attempt each, deferrals excluded.
    spent = stack.query("SELECT attempts, count(*) AS n FROM email_requests GROUP BY 1")
    assert [(row["attempts"], row["n"]) for row in spent] == [(1, MESSAGES)]
