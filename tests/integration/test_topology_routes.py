"""The routes copies take, on the real broker: retry copies come back by queue name whatever
the bindings, quorum retry queues honour a per-message expiration, and a copy the broker
cannot route keeps the original and pauses consumption (CONTRACT section 2)."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from email_worker.app import declare_topology
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def message(request_id: str, address: str, **extra: Any) -> dict[str, Any]:
    body = {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com"},
    }
    return body | extra


def delete_queues(stack: Stack, *names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.mark.parametrize("retry_type", ["quorum", "classic"])
def test_a_retry_copy_comes_back_although_the_exchange_has_no_binding_at_all(
    stack: Stack, retry_type: str
) -> None:
    settings = stack.settings(retry_queue_type=retry_type)
    delete_queues(stack, *(settings.retry_queue_name(d) for d in settings.retry_delays))
    stack.start_worker(retry_queue_type=retry_type)
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:  # an operator's topology without our bindings (the passive-mode loss)
        for key in settings.routing_keys:
            connection.channel().queue_unbind(settings.email_queue, settings.exchange, key)
    finally:
        connection.close()
    request_id = f"nobind-{uuid.uuid4().hex[:8]}"
    stack.smtp.script("nobind@example.com", Behaviour(rcpt="451 4.3.0 try again later"))

    # The gateway publishes straight to the queue; the retry copy must find its way back.
    stack.publish(
        message(request_id, "nobind@example.com"), exchange="", routing_key=settings.email_queue
    )

    wait_for(lambda: stack.status(request_id) == "sent", 20, "the retry to come back and send")
    assert len(stack.emails_to("nobind@example.com")) == 1
    wait_for(stack.idle, 10, "the queues to empty")


def test_a_quorum_retry_queue_honours_a_per_message_expiration_below_its_ttl(
    stack: Stack,
) -> None:
    settings = stack.settings(retry_delays=[60])  # a queue TTL far beyond the test's patience
    declare_topology(settings)
    retry = settings.retry_queue_name(60)
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, expiration="200")
        channel.basic_publish("", retry, b"jittered", properties, mandatory=True)
        got: list[bytes] = []

        def back() -> bool:
            method, _, body = channel.basic_get(settings.email_queue, auto_ack=True)
            if method is not None:
                got.append(body)
            return bool(got)

        wait_for(back, 20, "the copy to expire back before the queue's 60 s TTL")
    finally:
        connection.close()
    assert got == [b"jittered"]


@pytest.mark.parametrize("missing", ["failed", "retry"])
def test_an_unroutable_copy_keeps_the_original_and_pauses_consumption(
    stack: Stack, missing: str
) -> None:
    worker = stack.start_worker(pause_seconds=3)
    settings = worker.settings
    request_id = f"unroutable-{uuid.uuid4().hex[:8]}"
    if missing == "failed":
        delete_queues(stack, settings.failed_queue)  # deleted under the running worker
        body = message(request_id, "dl@example.com", template_code="missing")  # dead-letters
    else:
        delete_queues(stack, *(settings.retry_queue_name(d) for d in settings.retry_delays))
        stack.smtp.script("rt@example.com", Behaviour(rcpt="451 4.3.0 try again later"))
        body = message(request_id, "rt@example.com")

    stack.publish(body)

    wait_for(lambda: worker.consumer.pause_cause == "unroutable", 20, "consumption to pause")
    wait_for(lambda: worker.consumer.in_flight == 0, 10, "the delivery to settle")
    assert stack.query("SELECT 1 FROM email_requests WHERE request_id = %s", request_id)
    registry = worker.metrics.registry
    assert registry.get_sample_value("email_worker_consumer_paused", {"cause": "unroutable"}) == 1
    # Once, not in a hot loop: the consumer was cancelled before the original was requeued.
    assert registry.get_sample_value("email_worker_messages_consumed_total") == 1
    readiness = worker.readiness()
    assert not readiness.ready and readiness.checks["consumption"] is False
    assert readiness.paused is not None and readiness.paused["cause"] == "unroutable"
    if missing == "failed":  # the original waits in the email queue
        assert stack.queued() == 1

    declare_topology(stack.settings())  # the operator restores the queue
    if missing == "failed":
        assert stack.dead_letter(request_id).headers.failure_reason == "template_not_found"
    else:
        wait_for(lambda: stack.status(request_id) == "sent", 30, "the retry after the pause")
    wait_for(lambda: worker.readiness().checks["consumption"], 10, "consumption to resume")
    wait_for(stack.idle, 10, "the queues to empty")
