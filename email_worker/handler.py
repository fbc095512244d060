"""The handler: one neutral delivery in, one decision out, one outcome line logged.

It parses the body (``schemas``), runs the pure pipeline on the ``EmailRequest``, asks
``disposition.decide`` what becomes of the message and has the pipeline record that outcome before
the broker is told. The decision carries the ``request_id``, so settling (``broker/settle.py``)
never re-parses the body. ``handle`` never raises. Imports no adapter library: the broker's own
types stop at ``broker/``, and what the ledger keeps of a retry copy is made by an injected
function (``broker.retry_copies.keep``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from email_worker.disposition import (
    Ack,
    DeadLetter,
    Decision,
    Hold,
    Retry,
    RetryPolicy,
    decide,
    spent_attempts,
)
from email_worker.logs import request_context
from email_worker.pipeline import Attempt, Pipeline
from email_worker.ports import Delivery, RetryCopy
from schemas.failures import PermanentFailure, WorkerFailure
from schemas.inbound import parse_message, peek_ids
from schemas.request import EmailRequest
from schemas.schedule import MAX_SCHEDULE_DAYS

log = logging.getLogger("email_worker.outcome")

# What the ledger keeps of a delivery whose retry ``decision`` schedules (the copy settling
# will publish, less its expiration), or that is held until its send_at.
KeepCopy = Callable[[Delivery, Retry | Hold], RetryCopy]


class Handler:
    """Parses, runs the pipeline, decides once, logs the outcome line."""

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RetryPolicy,
        keep_copy: KeepCopy,
        *,
        max_message_bytes: int,
        max_schedule_days: int = MAX_SCHEDULE_DAYS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        self._max_schedule_days = max_schedule_days
        self._pipeline = pipeline
        self._policy = policy
        self._keep_copy = keep_copy
        self._max_bytes = max_message_bytes

    def handle(self, delivery: Delivery) -> Decision:
        """Process one delivery to a decision that names its request. Never raises."""
        started = time.monotonic()
        correlation = delivery.properties.correlation_id
        try:
            request = parse_message(
                delivery.body,
                max_bytes=self._max_bytes,
                amqp_correlation_id=correlation,
                clock=self._clock,
                max_schedule_days=self._max_schedule_days,
            )
        except PermanentFailure as failure:
            return self._refused(delivery, failure, started)
        attributes: dict[str, str | int] = {
            "request_id": request.request_id,
            "correlation_id": request.correlation_id,
            "attempt": delivery.attempts + 1,
        }
        with (
            request_context(request.request_id, request.correlation_id),
            self._pipeline.spans.message(delivery.properties.headers, attributes),
        ):
            attempt = self._pipeline.attempt(request, delivery.properties.priority)
            decision = self._conclude(request, attempt, delivery)
            self._pipeline.spans.annotate(_outcome_attributes(decision))
            _log_outcome(delivery, decision, started, attempt.fingerprint, attempt.relay)
            return decision

    def _refused(self, delivery: Delivery, failure: PermanentFailure, started: float) -> Decision:
        """An invalid message: a ``failed`` callback when it still carries an id, then the
        dead letter."""
        ids = peek_ids(
            delivery.body,
            message_id=delivery.properties.message_id,
            correlation_id=delivery.properties.correlation_id,
        )
        key = ids.request_id or ids.callback_id
        with request_context(key, ids.correlation or key):
            self._pipeline.reject_invalid(ids, failure)
            decision = self._decide(failure, delivery, ids.request_id)
            _log_outcome(delivery, decision, started, None)
            return decision

    def _conclude(self, request: EmailRequest, attempt: Attempt, delivery: Delivery) -> Decision:
        if attempt.duplicate:
            return Ack(attempt.outcome, request_id=request.request_id)
        decision: Decision
        if attempt.hold_until is not None:  # a scheduled send: the ledger holds it till then
            delay = (attempt.hold_until - self._clock()).total_seconds()
            decision = Hold(
                max(0.0, delay), delivery.attempts, delivery.deferrals, request.request_id
            )
        else:
            decision = self._decide(attempt.failure, delivery, request.request_id)
        if attempt.claim is None:
            return decision  # nothing claimed, nothing to record
        copy = self._keep_copy(delivery, decision) if isinstance(decision, Retry | Hold) else None
        spent = spent_attempts(decision, delivery.attempts)
        lost = self._pipeline.record(request, attempt, decision, copy, spent)
        if lost is None:
            return decision
        # The record was lost (lease taken over, database gone): the outcome is not ours to
        # settle; what becomes of the message is decided for that failure instead.
        return self._decide(lost, delivery, request.request_id)

    def _decide(
        self, failure: WorkerFailure | None, delivery: Delivery, request_id: str | None
    ) -> Decision:
        decision = decide(failure, delivery.attempts, delivery.deferrals, self._policy)
        return replace(decision, request_id=request_id)


def _outcome_attributes(decision: Decision) -> dict[str, str | int]:
    """The message span's outcome and reason code, named as in the outcome line."""
    if isinstance(decision, Ack):
        return {"outcome": decision.outcome}
    if isinstance(decision, Hold):
        return {"outcome": "scheduled"}
    outcome = "retried" if isinstance(decision, Retry) else "dead_lettered"
    return {"outcome": outcome, "reason": str(decision.reason)}


def _log_outcome(
    delivery: Delivery,
    decision: Decision,
    started: float,
    fp: tuple[str, str] | None,
    relay: str | None = None,
) -> None:
    """The one line per message outcome (STYLE "Logs"): never an address, only its domain and
    a keyed hash; ``relay`` names the relay that took (or answered) the send, if one did."""
    fields: dict[str, object] = {
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "attempt": delivery.attempts + 1,
        "redelivered": delivery.redelivered,
    }
    if fp is not None:
        fields["recipient_domain"], fields["recipient_hash"] = fp
    if relay is not None:
        fields["relay"] = relay
    if isinstance(decision, Ack):
        fields["outcome"] = decision.outcome
    elif isinstance(decision, Hold):
        fields |= {"outcome": "scheduled", "send_in_s": round(decision.delay, 1)}
    elif isinstance(decision, Retry):
        fields |= {
            "outcome": "retried",
            "reason": str(decision.reason),
            "detail": decision.detail,
            "retry_in_s": round(decision.delay, 1),
        }
    else:
        fields |= {
            "outcome": "dead_lettered",
            "reason": str(decision.reason),
            "detail": decision.detail,
        }
    level = logging.WARNING if isinstance(decision, DeadLetter) else logging.INFO
    log.log(level, "message %s", fields["outcome"], extra=fields)
