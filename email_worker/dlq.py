"""Reading the dead-letter queue for SREs without disturbing it.

Browsing consumes without acking and then closes the channel: the broker returns every
message to its original position (``failed.queue`` is a classic queue, so this neither
reorders records nor counts against a delivery limit).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingConnection

from schemas.deadletter import DeadLetterHeaders


@dataclass(frozen=True)
class DeadLetterRecord:
    headers: DeadLetterHeaders
    body: bytes
    properties: pika.BasicProperties

    def summary(self) -> dict[str, Any]:
        return {
            "request_id": self.headers.request_id,
            "failure_reason": self.headers.failure_reason,
            "attempts": self.headers.attempts,
            "failed_at": self.headers.failed_at,
            "failure_detail": self.headers.failure_detail,
        }


def browse(
    connection: BlockingConnection, queue: str, *, limit: int, reason: str | None = None
) -> Iterator[DeadLetterRecord]:
    """Yield up to ``limit`` records (oldest first) matching ``reason``; leaves them all in
    place, in order."""
    channel = connection.channel()
    try:
        count = channel.queue_declare(queue, passive=True).method.message_count
        if not count:
            return
        channel.basic_qos(prefetch_count=min(count, 10_000))
        yielded = 0
        messages = channel.consume(queue, inactivity_timeout=1.0)
        for seen, (method, properties, body) in enumerate(messages, start=1):
            if method is None:
                break
            record = DeadLetterRecord(
                DeadLetterHeaders.from_amqp(properties.headers or {}), body, properties
            )
            if reason is None or record.headers.failure_reason == reason:
                yield record
                yielded += 1
            if yielded >= limit or seen >= count:
                break
    finally:
        if channel.is_open:
            channel.close()  # unacked deliveries go back to their original positions


def format_line(record: DeadLetterRecord, *, as_json: bool) -> str:
    summary = record.summary()
    if as_json:
        return json.dumps(summary, sort_keys=True)
    return "{request_id}\t{failure_reason}\t{attempts}\t{failed_at}".format(**summary)
