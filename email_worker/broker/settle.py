"""Settling one delivery, in one place: publish the retry copy or the dead letter (confirmed,
mandatory, routed), then ack the original; on a failed publish keep the original (requeue) and
pause when the failure would repeat; pause when the decision says our own configuration is
broken. The worker's retry headers are declared here and written only here.

The order is the guarantee: if the publish fails the original is not acked, so a message is
always in exactly one place (the queue, a delay queue, or ``failed.queue``); a crash between
the confirm and the ack leaves two copies, which the ledger deduplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from email_worker.broker.publisher import UNREACHABLE, Publisher, PublishError, copy_properties
from email_worker.broker.topology import Topology
from email_worker.disposition import Ack, DeadLetter, Decision, Hold, Retry
from email_worker.ports import Delivery
from schemas.deadletter import DeadLetterHeaders

log = logging.getLogger(__name__)

# Our own retry counts travel in our own headers, never ``x-`` ones: from RabbitMQ 3.13 the
# broker owns ``x-death``.
ATTEMPTS_HEADER = "email_worker_attempts"
DEFERRALS_HEADER = "email_worker_deferrals"
FIRST_ATTEMPT_HEADER = "email_worker_first_attempt_at"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def retry_headers(decision: Retry | Hold, first_attempt_at: str | None) -> dict[str, object]:
    """The headers a retry copy carries: the new counts, and the first attempt when known."""
    headers: dict[str, object] = {
        ATTEMPTS_HEADER: decision.attempts,
        DEFERRALS_HEADER: decision.deferrals,
    }
    if first_attempt_at:
        headers[FIRST_ATTEMPT_HEADER] = first_attempt_at
    return headers


class Acks(Protocol):
    """What settling needs from the consumer (``broker/consumer.py``)."""

    def ack(self, delivery: Delivery) -> None: ...

    def nack(self, delivery: Delivery, *, requeue: bool) -> None: ...

    def pause(self, seconds: float, cause: str) -> None: ...


class Settler:
    """Carries a decision out on the broker. Copies are published by queue name through the
    default exchange (no binding can drop them)."""

    def __init__(
        self,
        publisher: Publisher,
        topology: Topology,
        acks: Acks,
        *,
        pause_seconds: float,
        on_settled: Callable[[Decision], None] = lambda decision: None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._acks = acks
        self._pause_seconds = pause_seconds
        self._on_settled = on_settled
        self._clock = clock

    def settle(self, delivery: Delivery, decision: Decision) -> None:
        """Publish what ``decision`` needs, then ack; the original is acked only once its copy
        was confirmed AND routed, otherwise it goes back to the queue."""
        try:
            self.publish_copy(delivery, decision)
        except PublishError as exc:
            if exc.cause != UNREACHABLE:
                # A copy returned unroutable or nacked would fail again at once: pause first,
                # so the requeued original waits in the queue instead of looping hot.
                self._acks.pause(self._pause_seconds, exc.cause)
            log.warning(
                "could not publish the retry or dead letter; the original is kept",
                extra={"error": str(exc), "cause": exc.cause},
            )
            self._acks.nack(delivery, requeue=True)
            return
        self._acks.ack(delivery)
        self._on_settled(decision)
        if isinstance(decision, Retry) and decision.pause:
            self._acks.pause(self._pause_seconds, str(decision.reason))

    def publish_copy(self, delivery: Delivery, decision: Decision) -> None:
        """Publish the copy ``decision`` requires (none for an ack). Raises ``PublishError``
        unless the broker confirmed AND routed it."""
        if isinstance(decision, Ack | Hold):  # a held message's copy is in the ledger
            return
        if isinstance(decision, Retry):
            self._retry(delivery, decision)
        else:
            self._dead_letter(delivery, decision)

    def _retry(self, delivery: Delivery, decision: Retry) -> None:
        first = delivery.first_attempt_at or self._clock()
        properties = copy_properties(
            delivery.properties,
            retry_headers(decision, first),
            expiration=str(max(1, int(decision.delay * 1000))),
        )
        queue = self._topology.retry_queue_for(decision.queue_delay)
        self._publisher.publish("", queue, delivery.body, properties)

    def _dead_letter(self, delivery: Delivery, decision: DeadLetter) -> None:
        now = self._clock()
        headers: dict[str, object] = DeadLetterHeaders(
            failure_reason=str(decision.reason),
            failure_detail=decision.detail,
            attempts=decision.attempts,
            first_attempt_at=delivery.first_attempt_at or now,
            failed_at=now,
            request_id=decision.request_id,
        ).to_amqp()
        # Our counters are dropped, so a replayed record starts afresh.
        headers |= {ATTEMPTS_HEADER: None, DEFERRALS_HEADER: None, FIRST_ATTEMPT_HEADER: None}
        properties = copy_properties(delivery.properties, headers)
        self._publisher.publish("", self._topology.failed_queue, delivery.body, properties)
