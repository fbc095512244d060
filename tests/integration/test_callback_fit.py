"""Status callbacks fitted to the gateways' own endpoints (CONTRACT section 7), end to end: the
worker on real RabbitMQ, Postgres and SMTP, the gateway's status endpoint a real HTTP server
that answers the way the gateways of issue 13 do.

- An aio-pika gateway's endpoint wants ``?notification_id=`` in the URL and the fields
  ``error_message`` / ``delivered_at``, and answers 400 to anything else.
- A NestJS gateway's endpoint reads camelCase ``notificationId`` and ``channel``, answers 201
  whatever it gets and ignores what it does not understand.
- A gateway verifying signatures with the reference ``standardwebhooks`` library and the
  shipped example secret.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.http import Reply, Responder, Seen
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATUSES = ("delivered", "pending", "failed")
STRICT_PATH = "/api/v1/email/status"
NEST_PATH = "/notifications/email/status"


def message(tag: str, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"r-{tag}",
        "notification_id": f"n-{tag}",
        "template_code": "welcome",
        "to_email": f"{tag}@example.com",
        "variables": {"name": "Ada", "link": "https://example.com/start"},
        **fields,
    }


def strict_gateway(seen: Seen) -> Reply:
    """The aio-pika gateway's endpoint: 400 unless the URL names the notification and the body
    has ``delivered_at`` (delivered) or ``error_message`` (pending, failed)."""
    body = seen.json()
    wanted = "delivered_at" if body.get("status") == "delivered" else "error_message"
    if "notification_id" not in parse_qs(urlsplit(seen.path).query) or wanted not in body:
        return Reply(400, {"detail": "validation error"})
    return Reply(200, {"ok": True})


def nest_gateway(understood: list[tuple[str, str, Any]]) -> Responder:
    """The NestJS gateway's endpoint: 201 always; acts only on ``notificationId`` + ``channel``."""

    def answer(seen: Seen) -> Reply:
        body = seen.json()
        nid, status = body.get("notificationId"), body.get("status")
        if isinstance(nid, str) and status in STATUSES and body.get("channel") == "email":
            understood.append((nid, status, body.get("error")))
        return Reply(201, {})

    return answer


def outbox_states(stack: Stack, request_id: str) -> list[str]:
    rows = stack.query(
        "SELECT state FROM callback_outbox WHERE request_id = %s ORDER BY id", request_id
    )
    return [row["state"] for row in rows]


def posts(stack: Stack, path: str) -> list[Seen]:
    return [s for s in stack.http.seen("POST") if urlsplit(s.path).path == path]


def rejected_total() -> float:
    value = REGISTRY.get_sample_value("email_worker_callbacks_total", {"result": "rejected"})
    return value or 0.0


def test_a_strict_gateway_rejects_the_default_shape_after_one_post_then_fits(
    stack: Stack,
) -> None:
    stack.http.route("POST", STRICT_PATH, strict_gateway)
    url = stack.http.url + STRICT_PATH
    before = rejected_total()
    stack.start_worker(callback_url=url)
    stack.publish(message("a1"))
    wait_for(lambda: outbox_states(stack, "r-a1") == ["rejected"], 20, "a rejected callback")
    assert [s.json()["notification_id"] for s in posts(stack, STRICT_PATH)] == ["n-a1"]
    assert rejected_total() == before + 1
    stack.stop_workers()

    stack.start_worker(
        callback_url=url + "?notification_id={notification_id}",
        callback_field_names="error:error_message,timestamp:delivered_at",
    )
    stack.publish(message("a2", notification_id="n a2/é"))
    wait_for(lambda: outbox_states(stack, "r-a2") == ["delivered"], 20, "a fitted callback")
    _, fitted = posts(stack, STRICT_PATH)  # the rejected one was never sent again
    assert parse_qs(urlsplit(fitted.path).query) == {"notification_id": ["n a2/é"]}
    assert {"delivered_at", "error_message", "status"} <= set(fitted.json())
    assert outbox_states(stack, "r-a1") == ["rejected"]


def test_a_nestjs_gateway_understands_delivered_and_invalid_message_callbacks(
    stack: Stack,
) -> None:
    understood: list[tuple[str, str, Any]] = []
    stack.http.route("POST", NEST_PATH, nest_gateway(understood))
    stack.start_worker(
        callback_url=stack.http.url + NEST_PATH,
        callback_field_names="notification_id:notificationId",
        callback_extra_fields='{"channel": "email"}',
    )
    data = {
        "requestId": "r-nest",
        "notificationId": "n-nest",
        "templateCode": "welcome",
        "toEmail": "nest@example.com",
        "variables": {"name": "Ada", "link": "https://example.com/start"},
    }
    stack.publish({"pattern": "email.send", "data": data})
    # Refused as invalid (no requestId, no recipient) but it carries its notificationId.
    invalid = {"notificationId": "n-nest-bad", "templateCode": "welcome"}
    stack.publish({"pattern": "email.send", "data": invalid})
    wait_for(lambda: len(understood) == 2, 20, "both callbacks understood")
    by_id = {nid: (status, error) for nid, status, error in understood}
    assert by_id["n-nest"] == ("delivered", None)
    status, error = by_id["n-nest-bad"]
    assert status == "failed" and error.startswith("invalid_message: ")
    assert stack.dead_letter(None).headers.failure_reason == "invalid_message"


def test_an_invalid_message_known_only_by_its_amqp_message_id_gets_a_failed_callback(
    stack: Stack,
) -> None:
    stack.start_worker()
    stack.publish({"template_code": "welcome", "to": "x@example.com"}, message_id="m-only-1")
    wait_for(lambda: bool(stack.callbacks("m-only-1")), 20, "a failed callback for m-only-1")
    (callback,) = stack.callbacks("m-only-1")
    assert callback["status"] == "failed"
    assert callback["error"] == "invalid_message: request_id: missing"


def test_one_pending_per_counted_attempt_while_the_breaker_is_open(stack: Stack) -> None:
    # The template service fails: each counted attempt trips the breaker (fail_max 1), which
    # then defers the message through the retry queues for 2 s at a time without counting.
    stack.http.route("GET", "/api/v1/templates/welcome", Reply(503))
    stack.start_worker(breaker_fail_max=1, breaker_reset_seconds=2.0)
    stack.publish(message("brk"))

    def posted() -> list[str]:
        return [c["status"] for c in stack.callbacks("n-brk")]

    wait_for(lambda: "failed" in posted(), 30, "retries exhausted, and the gateway told")
    events = stack.query(
        "SELECT detail FROM email_events WHERE request_id = %s AND event = 'pending'", "r-brk"
    )
    deferrals = sum(e["detail"] == "breaker open" for e in events)
    assert deferrals >= 2, "the breaker deferred the message in between"
    assert len(events) - deferrals == 2  # attempts 1 and 2 failed and were counted; 3 ended it
    assert posted() == ["pending", "pending", "failed"]


def test_the_reference_library_verifies_our_callbacks_with_the_shipped_secret(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = ROOT / "deploy" / "compose" / "dev-secrets" / "callback-secret"
    monkeypatch.setenv("EMAIL_WORKER_CALLBACK_SECRET_FILE", str(secret_file))
    hook = Webhook(secret_file.read_text())  # the gateway loads the same docker secret
    verified: list[Any] = []

    def gateway(seen: Seen) -> Reply:
        try:
            verified.append(hook.verify(seen.body, seen.headers))
        except WebhookVerificationError:
            return Reply(401)
        return Reply(204)

    stack.http.route("POST", CALLBACK_PATH, gateway)
    stack.start_worker(  # a reshaped body: the signature covers the bytes as sent
        callback_field_names="notification_id:notificationId,attempts:attempts",
        callback_extra_fields='{"channel": "email", "note": "é"}',
    )
    tag = uuid.uuid4().hex[:6]
    stack.publish(message(tag))
    stack.publish({**message(f"{tag}-bad"), "template_code": "not a code!"})
    wait_for(lambda: len(stack.http.seen("POST", CALLBACK_PATH)) >= 2, 20, "two callbacks")
    wait_for(lambda: len(verified) == 2, 5, "both verified by the reference library")
    assert {v["notificationId"]: v["status"] for v in verified} == {
        f"n-{tag}": "delivered",
        f"n-{tag}-bad": "failed",
    }
    assert all(v["channel"] == "email" and v["attempts"] is not None for v in verified)
    for seen in stack.http.seen("POST", CALLBACK_PATH):
        assert json.loads(seen.body)["note"] == "é"
