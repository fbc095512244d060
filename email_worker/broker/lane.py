"""The bulk lane (CONTRACT section 13): low-priority deliveries leave the email queue's window
for a queue of the worker's own, so that the consumer keeps reading the email queue, and sees a
high-priority message behind thousands of bulk ones, while sending is slow.

Moving is ``mover.py``'s; this module names the lane (``Lane``), what a move reports to
(``MoveHooks``), and how the lane is consumed: on the email queue's channel, by a consumer of
its own with its own prefetch (``subscribe``), so that its deliveries enter the same local
backlog and settle through the same acks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from email_worker.ports import Delivery


@dataclass(frozen=True)
class Lane:
    """The lane's queue and the parameters of the connection that moves copies there (one of
    its own: RELIABILITY rule 5); ``source``: the email queue, whose depth that connection
    reads while the worker has a backlog (empty: not read, the backlog never counts as deep)."""

    queue: str
    parameters: pika.ConnectionParameters
    source: str = ""


@dataclass(frozen=True)
class MoveHooks:
    """The consumer's ack and liveness check, and a counter of move results (``moved`` or
    ``failed``)."""

    ack: Callable[[Delivery], None]
    live: Callable[[Delivery], bool]
    counted: Callable[[str], None] = lambda result: None


def subscribe(
    connection: BlockingConnection,
    channel: BlockingChannel,
    queue: str,
    lane: str | None,
    on_message: Callable[..., None],
) -> list[str]:
    """Consume ``queue`` and, when it exists, ``lane`` on ``channel`` (``on_message`` gets
    ``lane=True`` for the lane's deliveries); returns the consumer tags. Prefetch is per
    consumer: each gets the channel's. The lane is checked on a throw-away channel first:
    consuming a missing queue closes the channel, and would take the email queue's consumer
    with it. A missing lane is consumed again at the next subscription (after a pause or a
    reconnect); the mover, which reads its depth, says that it is missing."""
    tags = [channel.basic_consume(queue, on_message)]
    if lane is not None:
        probe = connection.channel()
        try:
            probe.queue_declare(lane, passive=True)
        except ChannelClosedByBroker:
            return tags
        probe.close()
        tags.append(channel.basic_consume(lane, partial(on_message, lane=True)))
    return tags
