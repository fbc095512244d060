"""Cancels end to end (CONTRACT section 14) on the real RabbitMQ, Postgres and SMTP server:
``email-worker cancel`` (a process of its own, its callbacks delivered by an
``email-worker callbacks`` Celery worker) and ``POST /api/v1/notifications/{id}/cancel`` on a
worker's status API. A held send and a message still waiting in the queue are cancelled, never
sent, and the gateway gets one ``failed`` callback each; a sent request is refused (409, exit 1),
an unknown one too (404, exit 1), and a held send next to the cancelled one still goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.services import free_loopback_port
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

TOKEN = "cancel-test-token"
CLI_DETAIL = "cancelled: by an operator (email-worker cancel)"
API_DETAIL = "cancelled: through the status API"


def message(request_id: str, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com"},
    } | extra


def send_at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def post(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def cancel(port: int, request_id: str, query: str = "", **kw: Any) -> tuple[int, dict[str, Any]]:
    return post(port, f"/api/v1/notifications/{request_id}/cancel{query}", **kw)


def cli(stack: Stack, *args: str) -> tuple[int, list[str]]:
    """``email-worker cancel ARGS`` with the stack's settings: exit code and its own lines (the
    JSON log lines left out)."""
    result = subprocess.run(
        [sys.executable, "-m", "email_worker", "cancel", *args],
        env={**os.environ, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if not line.startswith("{")]
    return result.returncode, lines


def callbacks(stack: Stack, notification_id: str) -> list[tuple[str, str | None]]:
    return [(str(c["status"]), c.get("error")) for c in stack.callbacks(notification_id)]


def ledger(stack: Stack, request_id: str) -> tuple[str, str | None] | None:
    rows = stack.query(
        "SELECT status, failure_reason FROM email_requests WHERE request_id = %s", request_id
    )
    return (rows[0]["status"], rows[0]["failure_reason"]) if rows else None


def consumers(stack: Stack, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:  # not declared yet
        return 0
    finally:
        if connection.is_open:
            connection.close()


def ids(kind: str, *names: str) -> list[str]:
    return [f"{kind}-{name}-{uuid.uuid4().hex[:8]}" for name in names]


def test_cancel_through_the_status_api(stack: Stack) -> None:
    port = free_loopback_port()
    stack.start_worker(http_port=port, status_api_token=TOKEN)
    held, control, sent = ids("api", "held", "control", "sent")
    stack.publish(message(held, "held@example.com", send_at=send_at(10)))
    stack.publish(message(control, "control@example.com", send_at=send_at(10)))
    stack.publish(message(sent, "sent@example.com"))
    wait_for(lambda: stack.status(sent) == "sent", 20, "the plain send")
    wait_for(lambda: stack.status(held) == stack.status(control) == "scheduled", 20, "holds")

    assert cancel(port, held, token=None)[0] == 401
    assert cancel(port, held, token="wrong")[0] == 401
    code, body = cancel(port, held)
    assert code == 200 and body["success"] is True and body["error"] is None
    assert body["data"]["cancelled_from"] == "scheduled"
    assert body["data"]["already_cancelled"] is False
    assert body["message"].startswith("cancelled")
    code, body = cancel(port, held)
    assert code == 200 and body["data"]["already_cancelled"] is True
    code, body = cancel(port, sent)
    assert (code, body["success"], body["error"]) == (409, False, "already_sent")
    assert "already sent" in body["message"]
    code, body = cancel(port, "nobody-knows-this-id")
    assert (code, body["error"]) == (404, "not_found")
    assert "unseen=true" in body["message"]

    # The held send beside it still goes; the cancelled one never does.
    wait_for(lambda: bool(stack.emails_to("control@example.com")), 30, "the control send")
    wait_for(stack.idle, 20, "the queues to drain")
    assert stack.emails_to("held@example.com") == []
    assert ledger(stack, held) == ("failed", "cancelled")
    wait_for(lambda: callbacks(stack, held) == [("failed", API_DETAIL)], 20, "its callback")
    assert [status for status, _ in callbacks(stack, sent)] == ["delivered"]


def test_a_message_still_in_the_queue_is_cancelled_through_the_api(stack: Stack) -> None:
    port = free_loopback_port()
    queue = stack.settings().email_queue
    # A replica serving the API on the same ledger but consuming another queue, so the
    # message below stays in the email queue, not consumed yet.
    stack.start_worker(
        http_port=port,
        status_api_token=TOKEN,
        email_queue=f"{stack.prefix}.elsewhere.queue",
        routing_keys=["elsewhere"],
    )
    (queued,) = ids("api", "queued")
    stack.publish(message(queued, "queued@example.com"), exchange="", routing_key=queue)
    code, body = cancel(port, queued)
    assert code == 404 and ledger(stack, queued) is None  # refused: nothing recorded
    code, body = cancel(port, queued, "?unseen=true")
    assert code == 200 and body["data"]["cancelled_from"] is None
    assert stack.queued() == 1  # still waiting there

    stack.start_worker()  # consumes the email queue: the message is acked as cancelled
    wait_for(lambda: stack.queued() == 0, 20, "the message to be consumed")
    wait_for(stack.idle, 20, "the queues to drain")
    assert stack.emails_to("queued@example.com") == []
    assert ledger(stack, queued) == ("failed", "cancelled")
    assert [r for r in stack.dead_letters() if r.headers.request_id == queued] == []
    wait_for(lambda: callbacks(stack, queued) == [("failed", API_DETAIL)], 20, "its callback")


def test_cancel_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    queued, held, control, sent = ids("cli", "queued", "held", "control", "sent")
    stack.publish(message(queued, "queued@example.com"))  # no worker yet: it waits in the queue
    code, lines = cli(stack, queued)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"{queued}: no request with this request_id")
    assert "--unseen" in lines[0]
    code, lines = cli(stack, "--unseen", queued)
    assert code == 0 and lines[0].startswith(f"{queued}: cancelled: not seen yet")

    callback_queue = stack.settings().callback_queue
    with stack.spawn("callbacks", log=tmp_path / "callbacks.log"):
        wait_for(lambda: consumers(stack, callback_queue) == 1, 60, "the callbacks worker")
        stack.start_worker()
        wait_for(stack.idle, 20, "the queued message to be acked")
        assert ledger(stack, queued) == ("failed", "cancelled")
        stack.publish(message(held, "held@example.com", send_at=send_at(10)))
        stack.publish(message(control, "control@example.com", send_at=send_at(10)))
        stack.publish(message(sent, "sent@example.com"))
        wait_for(lambda: stack.status(sent) == "sent", 20, "the plain send")
        wait_for(lambda: stack.status(held) == "scheduled", 20, "the hold")

        code, lines = cli(stack, held, sent, "nobody-knows-this-id")
        assert code == 1
        assert lines[0].startswith(f"{held}: cancelled: it was scheduled")
        assert lines[1].startswith(f"{sent}: already sent")
        assert lines[2].startswith("nobody-knows-this-id: no request with this request_id")
        assert cli(stack, held) == (0, [f"{held}: already cancelled: nothing changed"])

        wait_for(lambda: bool(stack.emails_to("control@example.com")), 30, "the control send")
        wait_for(stack.idle, 20, "the queues to drain")
        # Delivered by the Celery worker, one each.
        expected = {queued: [("failed", CLI_DETAIL)], held: [("failed", CLI_DETAIL)]}
        wait_for(
            lambda: {r: callbacks(stack, r) for r in expected} == expected, 30, "the callbacks"
        )
    assert stack.emails_to("held@example.com") == stack.emails_to("queued@example.com") == []
    assert ledger(stack, held) == ("failed", "cancelled")
    assert ledger(stack, sent) == ("sent", None)
