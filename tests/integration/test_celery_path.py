"""The real callback path end to end: ``email-worker run`` hands each outbox row to Celery,
``email-worker callbacks`` (a Celery worker, as its own process) delivers it to the gateway.

Most end-to-end tests swap Celery out for ``InlineNotifier``; this one runs both commands as the
CLI runs them, on the real broker and database, and covers the three callback stories: delivered
at once, pending (a 451) and then delivered, and failed (no such template). Two ``callbacks``
processes run on this one host, as two replicas may: both must stay up and consume.
"""

from __future__ import annotations

import base64
import threading
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.http import Reply, Seen
from tests.support.smtp import Behaviour
from tests.support.stack import CALLBACK_PATH, TEMPLATE, Stack, wait_for

pytestmark = pytest.mark.integration

# A Standard Webhooks secret: whsec_ and the base64 of (here) 32 bytes.
SECRET = "whsec_" + base64.b64encode(b"celery path test secret, 32 byte").decode()


def message(request_id: str, address: str, template: str = "welcome") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": template,
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com"},
    }


def consumers(stack: Stack, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = connection.channel()
        return int(channel.queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
        return 0
    finally:
        if connection.is_open:
            connection.close()


def statuses(stack: Stack, request_id: str) -> list[str]:
    return [str(callback["status"]) for callback in stack.callbacks(request_id)]


def gate_the_retry(stack: Stack, request_id: str) -> None:
    """The flaky message's template is fetched on every attempt; the second fetch (the retry)
    is answered only once the gateway has the ``pending`` callback, so the retry cannot
    overtake it (a newer status would supersede an undelivered older one)."""
    pending_seen = threading.Event()
    fetches: list[int] = []

    def template(_: Seen) -> Reply:
        fetches.append(1)
        if len(fetches) > 1:
            pending_seen.wait(30)
        return Reply(200, {"success": True, "data": TEMPLATE})

    def gateway(seen: Seen) -> Reply:
        body = seen.json()
        if body.get("notification_id") == request_id and body.get("status") == "pending":
            pending_seen.set()
        return Reply(200, {"success": True})

    stack.http.route("GET", "/api/v1/templates/flaky", template)
    stack.http.route("POST", CALLBACK_PATH, gateway)


def test_run_hands_callbacks_to_the_celery_worker_which_delivers_them(
    stack: Stack, tmp_path: Path
) -> None:
    ok, flaky, failed = (f"celery-{kind}-{uuid.uuid4().hex[:8]}" for kind in "ofx")
    gate_the_retry(stack, flaky)
    stack.smtp.script("flaky@example.com", Behaviour(rcpt="451 4.3.0 try again later"))
    settings: dict[str, Any] = {
        "callback_secret": SECRET,
        "template_cache_seconds": 0,
        "retry_delays": [0.3, 0.6],
    }
    queue = stack.settings().callback_queue
    with (
        stack.spawn("callbacks", log=tmp_path / "callbacks-1.log", **settings) as first,
        stack.spawn("callbacks", log=tmp_path / "callbacks-2.log", **settings) as second,
        stack.spawn("run", log=tmp_path / "run.log", **settings) as run,
    ):
        # Two Celery workers of one host: neither may take the other's place (or crash on it).
        wait_for(lambda: consumers(stack, queue) == 2, 60, "both Celery workers to consume")
        stack.publish(message(ok, "ok@example.com"))
        stack.publish(message(flaky, "flaky@example.com", "flaky"))
        stack.publish(message(failed, "x@example.com", "missing"))
        wait_for(lambda: statuses(stack, ok) == ["delivered"], 60, "the delivered callback")
        wait_for(lambda: statuses(stack, failed) == ["failed"], 60, "the failed callback")
        wait_for(lambda: statuses(stack, flaky) == ["pending", "delivered"], 60, "both")
        assert first.poll() is None and second.poll() is None and run.poll() is None
        assert consumers(stack, queue) == 2
    assert [stack.status(r) for r in (ok, flaky, failed)] == ["sent", "sent", "failed"]
    assert len(stack.emails_to("ok@example.com")) == len(stack.emails_to("flaky@example.com")) == 1
    (pending,) = (c for c in stack.callbacks(flaky) if c["status"] == "pending")
    assert pending["error"].startswith("smtp_transient")
    assert stack.callbacks(failed)[0]["error"].startswith("template_not_found")
    for seen in stack.http.seen("POST", CALLBACK_PATH):  # signed, as Celery's worker sends them
        headers = {name.lower(): value for name, value in seen.headers.items()}
        assert headers.get("webhook-id") and headers.get("webhook-signature")
    # Nothing delivered twice: one POST per status event.
    assert len(stack.http.seen("POST", CALLBACK_PATH)) == 4
