"""Scheduled and expiring sends end to end (CONTRACT section 14) on the real RabbitMQ, Postgres
and an SMTP server of the test's own, whose own clock says when each message arrived: a held
request occupies no consumer, is not sent before its send_at and is sent within a few seconds
after it, across a restart of the worker and of the broker, once whatever the number of
replicas; expires_at and MAX_SCHEDULE_DAYS end in the dead-letter queue with a callback.
Cancels are in ``test_cancel.py``."""

from __future__ import annotations

import signal
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.private_rabbit import (  # noqa: F401 (fixtures)
    PrivateRabbit,
    private_rabbit_fixture,
    private_stack_fixture,
)
from tests.support.smtp import ReceivedMessage
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

# "Within a few seconds after send_at when the worker has no backlog": the release polls every
# SCHEDULE_POLL_SECONDS (1 s by default), then the copy goes through the queue and the relay.
# The bound is loose for a busy CI machine; "never before send_at" is exact.
FEW_SECONDS = 6.0


def message(request_id: str, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com"},
    } | extra


def ahead(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def rfc3339(moment: datetime, offset_hours: int = 2) -> str:
    """``moment`` as a gateway in another zone would write it (an offset, not UTC)."""
    zone = timezone(timedelta(hours=offset_hours))
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def the_email(stack: Stack, address: str, timeout: float) -> ReceivedMessage:
    wait_for(lambda: bool(stack.emails_to(address)), timeout, f"the email to {address}")
    (email,) = stack.emails_to(address)
    assert isinstance(email, ReceivedMessage)
    return email


def assert_on_time(email: ReceivedMessage, send_at: datetime) -> None:
    late = email.received_at - send_at.timestamp()
    assert late >= 0, f"sent {-late:.3f} s before send_at"
    assert late <= FEW_SECONDS, f"sent {late:.1f} s after send_at"


def events(stack: Stack, request_id: str) -> list[str]:
    rows = stack.query(
        "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request_id
    )
    return [str(row["event"]) for row in rows]


def statuses(stack: Stack, request_id: str) -> list[str]:
    return [str(callback["status"]) for callback in stack.callbacks(request_id)]


def consumers(stack: Stack) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        queue = stack.settings().email_queue
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


def test_a_held_send_waits_in_the_ledger_not_in_a_consumer_and_goes_on_time(
    stack: Stack,
) -> None:
    worker = stack.start_worker()
    request_id, address = f"sched-{uuid.uuid4().hex[:8]}", "later@example.com"
    send_at = ahead(6)
    stack.publish(message(request_id, address, send_at=rfc3339(send_at)))
    wait_for(lambda: stack.status(request_id) == "scheduled", 20, "the hold")
    # Acked: nothing waits in the queue or in the consumer's prefetch while it is held.
    assert stack.queued() == 0 and worker.consumer.in_flight == 0
    assert stack.emails_to(address) == []
    assert_on_time(the_email(stack, address, 30), send_at)
    wait_for(lambda: statuses(stack, request_id) == ["delivered"], 20, "the callback")
    assert events(stack, request_id) == ["claimed", "scheduled", "released", "claimed", "sent"]
    (row,) = stack.query("SELECT attempts FROM email_requests WHERE request_id = %s", request_id)
    assert row["attempts"] == 1  # waiting spent no attempt


def test_a_held_send_survives_a_killed_worker_and_goes_on_time(
    stack: Stack, tmp_path: Path
) -> None:
    request_id, address = f"restart-{uuid.uuid4().hex[:8]}", "restart@example.com"
    send_at = ahead(15)
    with stack.spawn("run", log=tmp_path / "first.log") as first:
        wait_for(lambda: consumers(stack) == 1, 60, "the first worker to consume")
        stack.publish(message(request_id, address, metadata={"send_at": rfc3339(send_at, -5)}))
        wait_for(lambda: stack.status(request_id) == "scheduled", 30, "the hold")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    wait_for(lambda: consumers(stack) == 0, 10, "the broker to drop the dead consumer")
    with stack.spawn("run", log=tmp_path / "second.log"):
        wait_for(lambda: consumers(stack) == 1, 60, "the second worker to consume")
        assert datetime.now(UTC) < send_at, "the restart took longer than the test allows"
        email = the_email(stack, address, 40)
    assert_on_time(email, send_at)
    assert stack.status(request_id) == "sent"


def test_two_replicas_release_each_held_send_once(stack: Stack) -> None:
    stack.start_worker()
    stack.start_worker()
    send_at = ahead(5)
    ids = [f"pair-{n}-{uuid.uuid4().hex[:6]}" for n in range(12)]
    for n, request_id in enumerate(ids):
        stack.publish(message(request_id, f"pair{n}@example.com", send_at=rfc3339(send_at)))
    wait_for(lambda: all(stack.status(r) == "sent" for r in ids), 40, "every send")
    wait_for(stack.idle, 20, "the queues to drain")
    for n, request_id in enumerate(ids):
        assert_on_time(the_email(stack, f"pair{n}@example.com", 1), send_at)
        # One release, one claim of its copy: no second copy reached the queue.
        assert events(stack, request_id) == ["claimed", "scheduled", "released", "claimed", "sent"]


def test_a_held_send_survives_a_broker_restart(
    private_rabbit: PrivateRabbit, private_stack: Stack
) -> None:
    stack = private_stack
    worker = stack.start_worker()
    request_id, address = f"broker-{uuid.uuid4().hex[:8]}", "broker@example.com"
    send_at = ahead(8)
    stack.publish(message(request_id, address, send_at=rfc3339(send_at)))
    wait_for(lambda: stack.status(request_id) == "scheduled", 20, "the hold")
    private_rabbit.stop_app()
    try:
        wait_for(lambda: not worker.consumer.consuming, 10, "the worker to notice")
    finally:
        private_rabbit.start_app()
    wait_for(lambda: worker.consumer.consuming, 60, "the worker to reconnect")
    back = datetime.now(UTC)
    email = the_email(stack, address, 40)
    # On time, or (when the broker took longer to come back than send_at was ahead) within a
    # few seconds of its return; never before send_at.
    assert email.received_at >= send_at.timestamp()
    assert email.received_at <= max(send_at, back).timestamp() + FEW_SECONDS
    assert stack.status(request_id) == "sent"


def test_expires_at_in_the_past_is_dead_lettered_expired_with_a_callback(stack: Stack) -> None:
    stack.start_worker()
    request_id = f"exp-{uuid.uuid4().hex[:8]}"
    stack.publish(message(request_id, "expired@example.com", expires_at=rfc3339(ahead(-60))))
    record = stack.dead_letter(request_id)
    assert record.headers.failure_reason == "expired"
    wait_for(lambda: statuses(stack, request_id) == ["failed"], 20, "the failed callback")
    assert stack.callbacks(request_id)[0]["error"].startswith("expired: ")
    assert stack.emails_to("expired@example.com") == []


def test_a_held_send_whose_expires_at_comes_first_expires_then(stack: Stack) -> None:
    stack.start_worker()
    request_id = f"exp-held-{uuid.uuid4().hex[:8]}"
    expires_at = ahead(4)
    stack.publish(
        message(
            request_id,
            "too-late@example.com",
            send_at=rfc3339(ahead(600)),
            expires_at=rfc3339(expires_at),
        )
    )
    wait_for(lambda: stack.status(request_id) == "scheduled", 20, "the hold")
    record = stack.dead_letter(request_id, timeout=30)
    assert record.headers.failure_reason == "expired"
    failed_at = datetime.fromisoformat(str(record.headers.failed_at).replace("Z", "+00:00"))
    assert failed_at >= expires_at
    wait_for(lambda: statuses(stack, request_id) == ["failed"], 20, "the failed callback")
    assert stack.emails_to("too-late@example.com") == []


def test_send_at_beyond_max_schedule_days_is_an_invalid_message(stack: Stack) -> None:
    stack.start_worker(max_schedule_days=3)
    request_id = f"far-{uuid.uuid4().hex[:8]}"
    stack.publish(message(request_id, "far@example.com", send_at=rfc3339(ahead(3 * 86400 + 60))))
    record = stack.dead_letter(request_id)
    assert record.headers.failure_reason == "invalid_message"
    assert "MAX_SCHEDULE_DAYS" in str(record.headers.failure_detail)
    wait_for(lambda: statuses(stack, request_id) == ["failed"], 20, "the failed callback")
    assert stack.callbacks(request_id)[0]["error"].startswith("invalid_message: send_at")
