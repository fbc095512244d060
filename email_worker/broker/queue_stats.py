"""Queue depths and consumer counts for the metrics, read by a passive ``queue_declare`` on a
short-lived connection of its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pika
from pika.exceptions import ChannelClosedByBroker


@dataclass(frozen=True)
class QueueStats:
    messages: int  # ready messages (unacknowledged ones are not counted by the broker here)
    consumers: int


def queue_stats(
    parameters: pika.ConnectionParameters, queues: Iterable[str]
) -> dict[str, QueueStats]:
    """Passive ``queue_declare`` of each queue on a short-lived connection of its own (never the
    consumer's: a slow scrape must not stall acks). A missing queue is left out."""
    stats: dict[str, QueueStats] = {}
    connection = pika.BlockingConnection(parameters)
    try:
        for name in queues:
            channel = connection.channel()
            try:
                ok = channel.queue_declare(name, passive=True).method
            except ChannelClosedByBroker:  # 404: the channel is closed
                continue
            stats[name] = QueueStats(int(ok.message_count), int(ok.consumer_count))
            channel.close()
    finally:
        connection.close()
    return stats
