"""RabbitMQ for the benchmark: publishing the spec's messages (as fast as possible, or paced at
a fixed rate) while recording each publish time, inspecting and deleting the run's queues, and
measuring the broker's raw consume capacity (a pika consumer, prefetch 50, one ack per message)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pika
import pika.exceptions

PUBLISH_BATCH = 50  # messages published between two looks at the clock when pacing


def spec_message(request_id: str, number: int) -> dict[str, Any]:
    """One HNG-style notification request carrying its address (no user service needed)."""
    return {
        "request_id": request_id,
        "notification_type": "email",
        "user_id": str(uuid.UUID(int=number + 1)),
        "to_email": f"user{number}@example.com",
        "template_code": "welcome",
        "variables": {
            "name": f"User {number}",
            "link": f"https://example.com/confirm/{request_id}",
            "meta": {"source": "benchmark"},
        },
        "priority": 1,
        "metadata": {},
    }


def connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.heartbeat = 0  # a paced publisher may sit in sleep(); no heartbeat to miss
    params.blocked_connection_timeout = 120
    return pika.BlockingConnection(params)


def publish(
    connection: pika.BlockingConnection,
    exchange: str,
    routing_key: str,
    bodies: Iterable[tuple[str, bytes]],
    *,
    rate: float | None = None,
) -> dict[str, float]:
    """Publish ``(request_id, body)`` pairs, persistent; at ``rate`` messages/s when given, else
    as fast as pika goes. Returns the wall-clock publish time of each request id (taken just
    before the frame is written).

    No per-message confirms (waiting for each one made the publisher slower than the workers),
    so nothing tells the publisher that the queue has everything. Seen here as the last
    publishes never reaching a worker: frames still queued in pika when the connection closed
    (18 of 20,000), hence a synchronous round trip on the channel to end the burst; and once
    with that round trip in place (the last 139 of 20,000, every worker idle), most likely a
    channel closed while its quorum queue was behind. So the caller keeps ``connection`` open
    until every message has been consumed."""
    messages = list(bodies)  # encoded before the clock starts
    # One properties object for all: building and encoding per-message properties costs the
    # publisher more than the frame itself, and the publish time is recorded here anyway.
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    published: dict[str, float] = {}
    channel = connection.channel()
    started = time.monotonic()
    for index, (request_id, body) in enumerate(messages):
        if rate and index % PUBLISH_BATCH == 0:
            _pace(connection, started + index / rate)
        published[request_id] = time.time()
        channel.basic_publish(exchange, routing_key, body, properties)
    channel.basic_qos(prefetch_count=0)  # the barrier: Basic.QosOk comes after all of them
    return published


def _pace(connection: pika.BlockingConnection, due: float) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        connection.sleep(delay)


def encoded(messages: Iterable[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    for message in messages:
        yield str(message["request_id"]), json.dumps(message).encode()


def queue_counts(url: str, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of ``queue``; ``None`` when it does not exist (yet)."""
    connection = connect(url)
    try:
        frame = connection.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count), int(frame.method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return None
    finally:
        if connection.is_open:
            connection.close()


def declare_classic(url: str, queue: str) -> None:
    """A durable classic queue with no arguments (what a plain consumer of the spec declares)."""
    connection = connect(url)
    try:
        connection.channel().queue_declare(queue, durable=True)
    finally:
        connection.close()


def delete(url: str, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
    """Delete queues and exchanges; missing ones are fine (a channel per name, since a 404
    closes the channel)."""
    connection = connect(url)
    try:
        for name in queues:
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                connection.channel().queue_delete(name)
        for name in exchanges:
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                connection.channel().exchange_delete(name)
    finally:
        connection.close()


def consume_capacity(url: str, queue: str, count: int, queue_type: str) -> float:
    """Messages/s a pika consumer (prefetch 50, one ack per message) drains from a ``queue_type``
    queue pre-filled with ``count`` spec-sized messages. The queue is deleted afterwards."""
    connection = connect(url)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
        bodies = encoded(spec_message(f"cap-{n}", n) for n in range(count))
        for _, body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
        deadline = time.monotonic() + 120
        while channel.queue_declare(queue, passive=True).method.message_count < count:
            if time.monotonic() > deadline:
                raise TimeoutError("pre-published messages did not all reach the queue")
            connection.sleep(0.05)
        return _drain(channel, queue, count)
    finally:
        if connection.is_open:
            connection.channel().queue_delete(queue)
            connection.close()


def _drain(channel: Any, queue: str, count: int) -> float:
    channel.basic_qos(prefetch_count=50)
    received = 0
    started = time.perf_counter()
    for method, _, _ in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            break  # nothing for 10 s: report what was drained
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received >= count:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    return received / elapsed if elapsed > 0 else 0.0
