"""The worker end to end on real RabbitMQ, Postgres, SMTP and HTTP servers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.http import Reply
from tests.support.smtp import Behaviour
from tests.support.stack import TEMPLATE, Stack, wait_for

pytestmark = pytest.mark.integration


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


def hng(request_id: str, **extra: Any) -> dict[str, Any]:
    message = {
        "request_id": request_id,
        "notification_type": "email",
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.com/start", "meta": {}},
        "priority": 1,
        "metadata": {},
    }
    message.update(extra)
    return message


def test_three_gateway_shapes_are_delivered_once_each_with_callbacks(stack: Stack) -> None:
    user_id = str(uuid.uuid4())
    stack.http.route(
        "GET",
        f"/api/v1/users/{user_id}",
        Reply(
            200,
            {
                "success": True,
                "data": {
                    "email": "grace@example.com",
                    "name": "Grace",
                    "preferences": {"email": True},
                },
            },
        ),
    )
    flat, nest, envelope = rid(), rid(), rid()
    stack.start_worker()
    stack.publish(hng(flat, user_id=user_id, variables={"link": "l"}), routing_key="email")
    stack.publish(
        {"pattern": "email.send", "data": hng(nest, to_email="nest@example.com")},
        routing_key="email.queue",
    )
    stack.publish(
        {
            "success": True,
            "message": "queued",
            "data": hng(envelope, user={"email": "env@example.com", "name": "Env"}),
        },
        exchange="",
        routing_key=f"{stack.prefix}.email.queue",
    )

    wait_for(lambda: all(stack.status(r) == "sent" for r in (flat, nest, envelope)))
    for address in ("grace@example.com", "nest@example.com", "env@example.com"):
        (message,) = stack.emails_to(address)
        parsed = message.parsed()
        assert parsed.get_content_type() == "multipart/alternative"
        assert parsed["From"] == "notifications@example.com"
    assert "Hello Grace" in stack.emails_to("grace@example.com")[0].parsed()["Subject"]
    wait_for(lambda: all(stack.callbacks(r) for r in (flat, nest, envelope)))
    callback = stack.callbacks(flat)[-1]
    assert callback["status"] == "delivered" and callback["error"] is None
    assert callback["timestamp"].endswith("Z")
    assert "grace@example.com" not in json.dumps(callback)
    row = stack.query("SELECT * FROM email_requests WHERE request_id = %s", flat)[0]
    assert row["subject"] == "Hello Grace" and row["html_body"] and row["text_body"]
    assert row["message_id"] == stack.emails_to("grace@example.com")[0].message_id
    assert row["smtp_reply"].startswith("250") and row["sent_at"].utcoffset().total_seconds() == 0


def test_duplicate_request_id_is_sent_once(stack: Stack) -> None:
    request_id = rid()
    stack.start_worker()
    for _ in range(3):
        stack.publish(hng(request_id, to_email="dup@example.com"))
    wait_for(lambda: stack.status(request_id) == "sent")
    stack.publish(hng(request_id, to_email="dup@example.com"))
    wait_for(stack.idle, 10, "the queues to drain")
    assert len(stack.emails_to("dup@example.com")) == 1
    assert stack.dead_letters() == []


def test_conflicting_payload_is_dead_lettered_and_not_sent(stack: Stack) -> None:
    request_id = rid()
    stack.start_worker()
    stack.publish(hng(request_id, to_email="first@example.com"))
    wait_for(lambda: stack.status(request_id) == "sent")
    stack.publish(hng(request_id, to_email="second@example.com"))
    record = stack.dead_letter(request_id)
    assert record.headers.failure_reason == "idempotency_conflict"
    assert stack.emails_to("second@example.com") == []
    assert stack.status(request_id) == "sent"


def test_invalid_json_is_dead_lettered_byte_for_byte(stack: Stack) -> None:
    body = b'{"request_id": "broken", "template_code": '
    stack.start_worker()
    stack.publish(body, correlation_id="corr-1")
    record = stack.dead_letter("broken")
    assert record.body == body
    assert record.properties.correlation_id == "corr-1"
    assert record.headers.failure_reason == "invalid_json"
    # Nothing was tried (CONTRACT v2 "Attempts": only a try that reached a relay counts).
    assert record.headers.attempts == 0 and record.headers.failed_at.endswith("Z")


def test_template_not_found_is_dead_lettered_with_a_failed_callback(stack: Stack) -> None:
    request_id = rid()
    stack.start_worker()
    stack.publish(hng(request_id, template_code="missing", to_email="nf@example.com"))
    assert stack.dead_letter(request_id).headers.failure_reason == "template_not_found"
    wait_for(lambda: bool(stack.callbacks(request_id)))
    assert stack.callbacks(request_id)[-1]["status"] == "failed"
    assert stack.callbacks(request_id)[-1]["error"].startswith("template_not_found")
    assert stack.status(request_id) == "failed"


def test_template_service_down_opens_the_breaker_defers_then_delivers(stack: Stack) -> None:
    stack.http.route("GET", "/api/v1/templates/down", Reply(503, "unavailable"))
    ids = [rid() for _ in range(5)]
    stack.start_worker(concurrency=1, prefetch=1)
    for n, request_id in enumerate(ids):
        stack.publish(hng(request_id, template_code="down", to_email=f"d{n}@example.com"))
    wait_for(lambda: all(stack.status(r) == "pending" for r in ids), 20, "deferrals")
    calls_when_open = len(stack.http.seen("GET", "/api/v1/templates/down"))
    assert calls_when_open <= 3 + 1  # fail_max, then the breaker stops the calls
    stack.http.route("GET", "/api/v1/templates/down", Reply(200, {"data": TEMPLATE}))
    wait_for(lambda: all(stack.status(r) == "sent" for r in ids), 30, "delivery after recovery")
    assert all(len(stack.emails_to(f"d{n}@example.com")) == 1 for n in range(5))
    assert stack.dead_letters() == []


def test_451_then_success_reports_pending_then_delivered(stack: Stack) -> None:
    request_id = rid()
    stack.smtp.script("flaky@example.com", Behaviour(rcpt="451 4.3.0 try later"))
    stack.start_worker()
    stack.publish(hng(request_id, to_email="flaky@example.com"))
    wait_for(lambda: stack.status(request_id) == "sent")
    assert len(stack.emails_to("flaky@example.com")) == 1
    events = [
        e["event"]
        for e in stack.query(
            "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request_id
        )
    ]
    assert events.count("claimed") + events.count("taken_over") == 2
    wait_for(lambda: [c["status"] for c in stack.callbacks(request_id)][-1:] == ["delivered"])


def test_550_is_dead_lettered_as_recipient_rejected(stack: Stack) -> None:
    request_id = rid()
    stack.smtp.script("gone@example.com", Behaviour(rcpt="550 5.1.1 no such user"))
    stack.start_worker()
    stack.publish(hng(request_id, to_email="gone@example.com"))
    record = stack.dead_letter(request_id)
    assert record.headers.failure_reason == "recipient_rejected"
    assert "gone@example.com" not in record.headers.failure_detail


def test_header_injection_through_a_variable_sends_nothing(stack: Stack) -> None:
    request_id = rid()
    stack.start_worker()
    stack.publish(
        hng(
            request_id,
            to_email="victim@example.com",
            variables={"name": "x\r\nBcc: attacker@evil.test", "link": "l"},
        )
    )
    assert stack.dead_letter(request_id).headers.failure_reason == "unsafe_content"
    assert stack.smtp.messages == []


def test_opted_out_user_is_reported_failed_and_nothing_is_sent(stack: Stack) -> None:
    request_id, user_id = rid(), str(uuid.uuid4())
    stack.http.route(
        "GET",
        f"/api/v1/users/{user_id}",
        Reply(200, {"email": "quiet@example.com", "name": "Q", "preferences": {"email": False}}),
    )
    stack.start_worker()
    stack.publish(hng(request_id, user_id=user_id))
    assert stack.dead_letter(request_id).headers.failure_reason == "opted_out"
    wait_for(lambda: bool(stack.callbacks(request_id)))
    assert stack.callbacks(request_id)[-1]["error"].startswith("opted_out")
    assert stack.smtp.messages == []
