"""Settling deliveries: what an ack or nack names, and which acks may travel as one frame.

An AMQP ack with ``multiple`` settles every earlier unsettled delivery of the channel too, so it
saves a frame per message only where it cannot settle work still in progress. ``coalesce_acks``
is the one rule for that; ``consumer.py`` applies it on its I/O thread, after sending the nacks
of the same batch (a nacked delivery is then no longer one a ``multiple`` ack could cover).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


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
