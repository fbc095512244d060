"""The one retry brain: ``decide`` maps a classified failure and the attempt counts to a
decision. Pure; the handler calls it, ``broker/settle.py`` carries the decision out, and adapters
only classify failures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from schemas.failures import (
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    ThrottledFailure,
    TransientFailure,
    WorkerFailure,
)

# Permanent outcomes decided before anything was tried (CONTRACT "Attempts": only a try that
# reached a relay or a dependency is spent): the dead letter carries the attempts spent before.
# Permanent failures that spend no attempt (CONTRACT v2 "Attempts": only a try that reached a
# relay or a dependency and failed counts): refused before any try, or never tried at all. A
# crash loop (redelivery_limit, delivery_limit) counts its last try: it may have reached a relay.
NOTHING_TRIED = frozenset(
    {
        Reason.EXPIRED,
        Reason.CANCELLED,
        Reason.SUPPRESSED,
        Reason.INVALID_JSON,
        Reason.INVALID_MESSAGE,
        Reason.TOO_LARGE,
        Reason.WRONG_TYPE,
        Reason.RECIPIENT_MISSING,
        Reason.RECIPIENT_INVALID,
        Reason.IDEMPOTENCY_CONFLICT,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delays: tuple[float, ...]
    max_deferrals: int = 200
    jitter: float = 0.2


@dataclass(frozen=True)
class Ack:
    outcome: str  # "delivered" | "duplicate"
    # Set by the handler, so settling never re-parses the body; not part of what was decided.
    request_id: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Retry:
    """Publish to the delay queue of ``queue_delay`` seconds with a per-message expiration of
    ``delay`` seconds (``delay <= queue_delay``), carrying the new counts in headers."""

    queue_delay: float
    delay: float
    reason: Reason
    detail: str
    attempts: int
    deferrals: int
    pause: bool = False  # our own configuration is broken: stop consuming for a while
    request_id: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason
    detail: str
    attempts: int
    request_id: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Hold:
    """A scheduled send (CONTRACT section 14): the ledger keeps the message until its
    ``send_at``, ``delay`` seconds from now, and the original is acked; the counts are carried
    unchanged into the copy that is released then."""

    delay: float
    attempts: int
    deferrals: int
    request_id: str | None = field(default=None, compare=False)


Decision = Ack | Retry | DeadLetter | Hold


def jittered(queue_delay: float, jitter: float, rng: random.Random | None = None) -> float:
    """A delay in ``[queue_delay * (1 - jitter), queue_delay]``.

    Jitter only ever shortens the queue's fixed TTL. RabbitMQ expires per-message TTLs at the
    head of the queue only, but since every message expires no later than its enqueue time plus
    the queue's TTL, and the head was enqueued first, no message waits past its own ceiling:
    head-of-line blocking is bounded by the jitter spread.
    """
    return queue_delay * (1 - jitter * (rng or random).random())


def decide(
    failure: WorkerFailure | None,
    attempts: int,
    deferrals: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """Decide what becomes of a message. ``attempts``/``deferrals`` are the counts carried in
    from earlier deliveries (0 on the first). Guarantees: a permanent failure dead-letters at
    once; a counted transient failure retries until ``max_attempts`` attempts have failed; a
    deferral retries without counting until ``max_deferrals``; unknown errors count as
    transient ``internal_error`` so a poison message still ends in the dead-letter queue."""
    if failure is None:
        return Ack("delivered")
    if isinstance(failure, PermanentFailure):
        spent = 0 if failure.reason in NOTHING_TRIED else 1
        return DeadLetter(failure.reason, failure.detail, attempts + spent)
    if isinstance(failure, ThrottledFailure):
        return _throttled(failure, attempts, deferrals, policy, rng)
    if isinstance(failure, DeferredFailure):
        deferrals += 1
        if deferrals > policy.max_deferrals:
            return _exhausted(failure, attempts)
        return _retry(failure, attempts, deferrals, deferrals, policy, rng)
    if not isinstance(failure, TransientFailure):
        failure = TransientFailure(Reason.INTERNAL_ERROR, failure.detail)
    attempts += 1
    if attempts >= policy.max_attempts:
        return _exhausted(failure, attempts)
    return _retry(failure, attempts, deferrals, attempts, policy, rng)


def _retry(
    failure: WorkerFailure,
    attempts: int,
    deferrals: int,
    step: int,
    policy: RetryPolicy,
    rng: random.Random | None,
) -> Retry:
    queue_delay = policy.delays[min(step, len(policy.delays)) - 1]
    return Retry(
        queue_delay=queue_delay,
        delay=jittered(queue_delay, policy.jitter, rng),
        reason=failure.reason,
        detail=failure.detail,
        attempts=attempts,
        deferrals=deferrals,
        pause=isinstance(failure, SystemicFailure),
    )


def _throttled(
    failure: ThrottledFailure,
    attempts: int,
    deferrals: int,
    policy: RetryPolicy,
    rng: random.Random | None,
) -> Retry:
    """A throttled route: wait in the shortest delay queue that covers the advised pause (the
    first one when none was advised), counting neither an attempt nor a deferral, so that
    throttling alone never dead-letters a message (CONTRACT section 12)."""
    advised = failure.retry_after or 0.0
    queue_delay = min((d for d in policy.delays if d >= advised), default=max(policy.delays))
    return Retry(
        queue_delay=queue_delay,
        delay=jittered(queue_delay, policy.jitter, rng),
        reason=failure.reason,
        detail=failure.detail,
        attempts=attempts,
        deferrals=deferrals,
    )


def _exhausted(failure: WorkerFailure, attempts: int) -> DeadLetter:
    return DeadLetter(Reason.RETRIES_EXHAUSTED, f"{failure.reason}: {failure.detail}", attempts)


def spent_attempts(decision: Decision, carried: int) -> int:
    """The attempts spent once ``decision`` is carried out, ``carried`` being those spent by
    earlier deliveries: the delivered send counts one; a retry or dead letter carries its own
    count (a deferral, a throttle or a refusal before any try added none); a hold adds none."""
    if isinstance(decision, Ack):
        return carried + 1 if decision.outcome == "delivered" else carried
    return decision.attempts
