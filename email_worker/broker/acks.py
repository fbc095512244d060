"""Settling deliveries: what an ack or nack names, and which acks may travel as one frame.

An AMQP ack with ``multiple`` settles every earlier unsettled delivery of the channel too, so it
saves a frame per message only where it cannot settle work still in progress. ``coalesce_acks``
is the one rule for that; ``send`` applies it on the consumer's I/O thread, after sending the
nacks of the same batch (a nacked delivery is then no longer one a ``multiple`` ack could cover).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Settlement:
    """One ack (``ack=True``) or nack of ``tag`` on the channel of ``generation``."""

    generation: int
    tag: int
    ack: bool
    requeue: bool = False


def coalesce_acks(unsettled: Iterable[int], acks: set[int]) -> tuple[int | None, list[int]]:
    """Split ``acks`` into one ``multiple`` ack and single ones.

    ``unsettled`` is every delivery tag of the channel not yet acked or nacked, oldest first.
    Returns the tag to ack with ``multiple=True`` (the end of the oldest run of unsettled tags
    that are all in ``acks``; None if the oldest is not) and the tags left to ack one by one.
    A tag not in ``acks`` ends the run: an ack may never cover a delivery still in progress.
    """
    upto: int | None = None
    for tag in unsettled:
        if tag not in acks:
            break
        upto = tag
    if upto is None:
        return None, sorted(acks)
    return upto, sorted(tag for tag in acks if tag > upto)


class SettlingChannel(Protocol):
    """The two calls of a pika channel that settle deliveries."""

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None: ...

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None: ...


def send(
    channel: SettlingChannel,
    pending: Iterable[Settlement],
    generation: int,
    unsettled: dict[int, None],
) -> None:
    """Send the settlements of ``generation`` (those of an older channel are void: the broker
    requeued their deliveries) on ``channel``, and forget the tags they settle. ``unsettled``
    is every tag of the channel not yet settled, oldest first; the nacks go first, then the
    acks of the oldest run as one ``multiple`` ack, then the others one by one."""
    acks: set[int] = set()
    for settlement in pending:
        if settlement.generation != generation:
            continue
        if settlement.ack:
            acks.add(settlement.tag)
        else:  # before the acks: a nacked tag is then no longer covered by a multiple ack
            channel.basic_nack(settlement.tag, requeue=settlement.requeue)
            unsettled.pop(settlement.tag, None)
    upto, singles = coalesce_acks(unsettled, acks)
    if upto is not None:
        channel.basic_ack(upto, multiple=True)
    for tag in singles:
        channel.basic_ack(tag)
    for tag in acks:
        unsettled.pop(tag, None)
