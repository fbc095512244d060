"""The consumer against real RabbitMQ: coalesced acks never settle work still in progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pika
import pytest

from email_worker.broker.consumer import Consumer
from email_worker.ports import Delivery

pytestmark = pytest.mark.integration

SLOW = {b"5", b"17", b"30"}  # held in progress until the consumer has stopped


@pytest.fixture
def queue(amqp_url: str, unique_prefix: str) -> Iterator[str]:
    name = f"{unique_prefix}.acks"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        yield name
    finally:
        channel.queue_delete(name)
        connection.close()


def _depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    depth = connection.channel().queue_declare(queue, passive=True).method.message_count
    connection.close()
    return int(depth)


def _ready(amqp_url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        bodies.append(body)
    connection.close()
    return bodies


def test_acks_of_finished_work_leave_unfinished_deliveries_to_be_redelivered(
    amqp_url: str, queue: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for n in range(60):
        channel.basic_publish("", queue, str(n).encode())
    connection.close()
    release = threading.Event()
    acked: list[bytes] = []
    lock = threading.Lock()

    def process(delivery: Delivery) -> None:
        if delivery.body in SLOW:
            release.wait(30)
            consumer.ack(delivery)  # too late: its channel is gone, so this is dropped
            return
        if delivery.body == b"9":
            consumer.nack(delivery, requeue=False)  # dropped by the broker (no DLX here)
            return
        consumer.ack(delivery)
        with lock:
            acked.append(delivery.body)

    consumer = Consumer(
        pika.URLParameters(amqp_url), queue, process, prefetch=50, concurrency=8, drain_seconds=0
    )
    runner = threading.Thread(target=consumer.run)
    runner.start()
    deadline = time.monotonic() + 20
    while len(acked) < 56 and time.monotonic() < deadline:
        time.sleep(0.05)
    # No pause for the last acks: stop() drains, and the drain sends every ack already queued.
    consumer.stop()  # drain_seconds=0: the connection closes with the slow three unsettled
    deadline = time.monotonic() + 10
    while _depth(amqp_url, queue) < len(SLOW) and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    runner.join(30)

    assert len(acked) == 56
    assert sorted(_ready(amqp_url, queue)) == sorted(SLOW)  # redelivered, not acked by a neighbour
