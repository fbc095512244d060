"""The retry brain: one table of (failure, counts) → decision."""

from __future__ import annotations

import random

import pytest

from email_worker.disposition import Ack, DeadLetter, Retry, RetryPolicy, decide, jittered
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
    WorkerFailure,
)

POLICY = RetryPolicy(max_attempts=3, delays=(5.0, 30.0), max_deferrals=4, jitter=0.2)


@pytest.mark.parametrize(
    ("failure", "attempts", "deferrals", "expected"),
    [
        (None, 0, 0, Ack),
        (PermanentFailure(Reason.TEMPLATE_NOT_FOUND), 0, 0, DeadLetter),
        (PermanentFailure(Reason.RECIPIENT_REJECTED), 1, 0, DeadLetter),
        (TransientFailure(Reason.SMTP_TRANSIENT), 0, 0, Retry),
        (TransientFailure(Reason.SMTP_TRANSIENT), 1, 0, Retry),
        (TransientFailure(Reason.SMTP_TRANSIENT), 2, 0, DeadLetter),
        (AmbiguousDelivery(Reason.SMTP_UNKNOWN), 0, 0, Retry),
        (DeferredFailure(Reason.TEMPLATE_SERVICE_UNAVAILABLE), 2, 3, Retry),
        (DeferredFailure(Reason.LEASE_BUSY), 2, 4, DeadLetter),
        (WorkerFailure(Reason.INTERNAL_ERROR), 0, 0, Retry),
    ],
)
def test_decision_table(
    failure: WorkerFailure | None, attempts: int, deferrals: int, expected: type
) -> None:
    assert isinstance(decide(failure, attempts, deferrals, POLICY), expected)


def test_permanent_failure_keeps_its_reason() -> None:
    decision = decide(PermanentFailure(Reason.OPTED_OUT, "user opted out"), 0, 0, POLICY)
    assert decision == DeadLetter(Reason.OPTED_OUT, "user opted out", 1)


@pytest.mark.parametrize("reason", [Reason.EXPIRED, Reason.SUPPRESSED, Reason.CANCELLED])
@pytest.mark.parametrize("spent", [0, 2])
def test_a_failure_decided_before_any_try_spends_no_attempt(reason: Reason, spent: int) -> None:
    # Expired, suppressed or cancelled before anything was tried: the dead letter's attempts
    # are those spent before (CONTRACT "Attempts"), not one more.
    decision = decide(PermanentFailure(reason, "detail"), spent, 1, POLICY)
    assert decision == DeadLetter(reason, "detail", spent)


def test_exhausted_retries_name_the_last_reason() -> None:
    decision = decide(TransientFailure(Reason.SMTP_TRANSIENT, "451 at RCPT"), 2, 0, POLICY)
    assert decision == DeadLetter(Reason.RETRIES_EXHAUSTED, "smtp_transient: 451 at RCPT", 3)


def test_counted_retries_walk_the_delay_ladder_and_stay_on_the_last_step() -> None:
    policy = RetryPolicy(max_attempts=10, delays=(5.0, 30.0), jitter=0.0)
    steps = [decide(TransientFailure(Reason.SMTP_TRANSIENT), n, 0, policy) for n in range(4)]
    assert [s.queue_delay for s in steps if isinstance(s, Retry)] == [5.0, 30.0, 30.0, 30.0]
    assert [s.attempts for s in steps if isinstance(s, Retry)] == [1, 2, 3, 4]


def test_deferrals_do_not_consume_attempts() -> None:
    decision = decide(DeferredFailure(Reason.TEMPLATE_SERVICE_UNAVAILABLE), 2, 0, POLICY)
    assert isinstance(decision, Retry)
    assert (decision.attempts, decision.deferrals) == (2, 1)


def test_only_systemic_failures_pause_consumption() -> None:
    systemic = decide(SystemicFailure(Reason.SMTP_AUTH_FAILED), 0, 0, POLICY)
    transient = decide(TransientFailure(Reason.SMTP_TRANSIENT), 0, 0, POLICY)
    assert isinstance(systemic, Retry) and systemic.pause
    assert isinstance(transient, Retry) and not transient.pause


@pytest.mark.parametrize("seed", range(20))
def test_jitter_only_shortens_the_queue_delay(seed: int) -> None:
    delay = jittered(30.0, 0.2, random.Random(seed))
    assert 24.0 <= delay <= 30.0


def test_jitter_spreads_delays() -> None:
    rng = random.Random(7)
    assert len({round(jittered(30.0, 0.2, rng), 3) for _ in range(50)}) > 40
