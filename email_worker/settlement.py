"""Carry out a decision on the broker: publish the retry copy or the dead letter (confirmed,
mandatory), and only then let the consumer ack the original.

The order is the guarantee: if the publish fails the original is not acked, so a message is
always in exactly one place (the queue, a delay queue, or ``failed.queue``); a crash between
the confirm and the ack leaves two copies, which the ledger deduplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from email_worker.consumer import (
    ATTEMPTS_HEADER,
    DEFERRALS_HEADER,
    FIRST_ATTEMPT_HEADER,
    Delivery,
)
from email_worker.disposition import Ack, DeadLetter, Decision, Retry
from email_worker.publisher import Publisher, copy_properties
from email_worker.topology import Topology
from schemas.deadletter import DeadLetterHeaders
from schemas.inbound import peek_request_id


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Settler:
    """Publishes what a decision requires, by queue name through the default exchange (no
    binding can drop a copy). Raises ``PublishError`` unless the broker confirmed AND routed
    the copy; the caller then keeps the original instead of acking it."""

    def __init__(
        self, publisher: Publisher, topology: Topology, clock: Callable[[], str] = utc_now
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._clock = clock

    def settle(self, delivery: Delivery, decision: Decision) -> None:
        if isinstance(decision, Ack):
            return
        if isinstance(decision, Retry):
            self._retry(delivery, decision)
        else:
            self._dead_letter(delivery, decision)

    def _retry(self, delivery: Delivery, decision: Retry) -> None:
        properties = copy_properties(
            delivery.properties,
            {
                ATTEMPTS_HEADER: decision.attempts,
                DEFERRALS_HEADER: decision.deferrals,
                FIRST_ATTEMPT_HEADER: delivery.first_attempt_at or self._clock(),
            },
            expiration=str(max(1, int(decision.delay * 1000))),
        )
        queue = self._topology.retry_queue_for(decision.queue_delay)
        self._publisher.publish("", queue, delivery.body, properties)

    def _dead_letter(self, delivery: Delivery, decision: DeadLetter) -> None:
        now = self._clock()
        headers = DeadLetterHeaders(
            failure_reason=str(decision.reason),
            failure_detail=decision.detail,
            attempts=decision.attempts,
            first_attempt_at=delivery.first_attempt_at or now,
            failed_at=now,
            request_id=peek_request_id(delivery.body),
        ).to_amqp()
        # Our counters are dropped, so a replayed record starts afresh.
        headers |= {ATTEMPTS_HEADER: None, DEFERRALS_HEADER: None, FIRST_ATTEMPT_HEADER: None}
        properties = copy_properties(delivery.properties, headers)
        self._publisher.publish("", self._topology.failed_queue, delivery.body, properties)
