"""SANDBOX=true on the real worker (RabbitMQ, Postgres, the callback receiver): the whole
pipeline runs, every simulated outcome ends where the real one would (ledger, callbacks,
suppression list, dead letters, metrics), and no relay sees a single connection."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

VARIABLES = {"name": "Ada", "link": "https://example.com/x"}


def publish(stack: Stack, local: str) -> tuple[str, str]:
    """Send one request to ``local+<tag>@example.com``; its request id and address."""
    request_id = f"sbx-{uuid.uuid4().hex[:10]}"
    address = f"{local}+{request_id}@example.com"
    message = {"request_id": request_id, "template_code": "welcome", "to_email": address}
    stack.publish(message | {"variables": VARIABLES})
    return request_id, address


def row(stack: Stack, request_id: str) -> dict[str, Any]:
    (found,) = stack.query(
        "SELECT status, attempts, relay, failure_reason, smtp_reply FROM email_requests"
        " WHERE request_id = %s",
        request_id,
    )
    return found


def statuses(stack: Stack, request_id: str) -> list[str]:
    return [c["status"] for c in stack.callbacks(request_id)]


def suppressed(stack: Stack, address: str) -> str | None:
    found = stack.query("SELECT reason FROM suppressions WHERE address = %s", address.lower())
    return found[0]["reason"] if found else None


def test_the_sandbox_runs_the_whole_pipeline_without_any_relay_connection(stack: Stack) -> None:
    worker = stack.start_worker(sandbox=True, max_attempts=3, retry_delays=[0.3, 0.6])
    ok, _ = publish(stack, "ann")
    bounce, bounced = publish(stack, "bounce")
    soft, _ = publish(stack, "softbounce")
    complaint, complained = publish(stack, "complaint")
    timeout, _ = publish(stack, "timeout")

    wait_for(lambda: statuses(stack, ok) == ["delivered"], 20, "the accepted message")
    assert row(stack, ok) == {
        "status": "sent",
        "attempts": 1,
        "relay": "sandbox://",
        "failure_reason": None,
        "smtp_reply": "250 2.0.0 sandbox",
    }

    wait_for(lambda: statuses(stack, bounce) == ["failed"], 20, "the hard bounce")
    assert row(stack, bounce)["failure_reason"] == "recipient_rejected"
    assert stack.callbacks(bounce)[-1]["error"].startswith("recipient_rejected: 550 5.1.1")
    assert stack.dead_letter(bounce).headers.failure_reason == "recipient_rejected"
    assert suppressed(stack, bounced) == "hard_bounce"

    wait_for(lambda: statuses(stack, soft)[-1:] == ["delivered"], 20, "the soft bounce")
    assert statuses(stack, soft) == ["pending", "delivered"]  # 451 once: an attempt spent
    assert (row(stack, soft)["status"], row(stack, soft)["attempts"]) == ("sent", 2)

    wait_for(lambda: row(stack, complaint)["status"] == "complained", 20, "the complaint")
    wait_for(lambda: statuses(stack, complaint) == ["delivered", "failed"], 20, "its callback")
    assert stack.callbacks(complaint)[-1]["error"].startswith("complained")
    assert suppressed(stack, complained) == "complaint"

    record = stack.dead_letter(timeout, 30)  # ambiguous every time: unknown, then exhausted
    assert record.headers.failure_reason == "retries_exhausted"
    events = stack.query(
        "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", timeout
    )
    assert "unknown" in [e["event"] for e in events]

    assert stack.smtp.connections == 0 and stack.smtp.messages == []
    labels = {"relay": "sandbox://", "result": "sent"}
    assert worker.metrics.registry.get_sample_value("email_worker_sends_total", labels) == 3
    assert worker.readiness().relays == {"sandbox://": {"reachable": True, "breaker": "closed"}}
