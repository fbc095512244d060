"""The ledger checker's delivery-policy rules on synthetic observations: cancelled requests, a
copy sent before its send_at, throttling that spent an attempt or sent a ``pending`` callback,
dead letters without a reason, and expectations with alternatives."""

from __future__ import annotations

import pytest

from tests.support.ledger_check import (
    Copy,
    DeadLetter,
    LedgerRow,
    Observations,
    Request,
    classify,
)

A = Request("a", "a@x.test")
COPY = Copy("a@x.test", "<m1@x>", received_at=100.0)
CANCELLED = LedgerRow("failed", None, ("claimed", "scheduled", "cancelled"), "cancelled", 1)
THROTTLED_ONCE = ("claimed", "pending", "claimed", "sent")


def verdict(
    copies: list[Copy],
    dead: list[DeadLetter],
    row: LedgerRow | None,
    *,
    request: Request = A,
    callbacks: list[str] | None = None,
    attempts_checked: bool = True,
) -> tuple[str, str]:
    ledger = {} if row is None else {request.key: row}
    cb = None if callbacks is None else {request.key: callbacks}
    seen = Observations(copies, dead, ledger, cb, attempts_checked=attempts_checked)
    (only,) = classify([request], seen).verdicts
    return only.outcome, only.detail


def sent(*retries: str, attempts: int = 1, events: tuple[str, ...] = ()) -> LedgerRow:
    trail = events or ("claimed", *(["pending", "claimed"] * len(retries)), "sent")
    return LedgerRow("sent", "<m1@x>", trail, None, attempts, retries)


def test_a_cancelled_request_is_its_own_passing_class_with_a_failed_callback() -> None:
    cancel = Request("a", "a@x.test", "cancelled")
    assert verdict([], [], CANCELLED, request=cancel)[0] == "cancelled"
    assert verdict([], [], CANCELLED, request=cancel, callbacks=["failed"])[0] == "cancelled"
    outcome, detail = verdict([], [], CANCELLED, request=cancel, callbacks=[])
    assert outcome == "unexpected" and "callbacks" in detail


def test_cancelled_but_sent_or_expected_elsewhere_is_unexpected() -> None:
    outcome, detail = verdict([COPY], [], CANCELLED, request=Request("a", "a@x.test", "cancelled"))
    assert (outcome, detail) == ("unexpected", "cancelled, but the relay holds 1 copies")
    assert verdict([], [], CANCELLED)[0] == "unexpected"  # expected a delivery
    # A failed row for another reason, with no dead letter, is lost.
    assert verdict([], [], LedgerRow("failed", reason="expired"))[0] == "lost"


def test_a_dead_letter_with_reason_cancelled_matches_the_expectation() -> None:
    cancel = Request("a", "a@x.test", "cancelled")
    dead = [DeadLetter("a", "cancelled")]
    assert verdict([], dead, CANCELLED, request=cancel)[0] == "dead_lettered"


def test_a_dead_letter_without_a_reason_is_unexpected() -> None:
    anything = Request("a", "a@x.test", "any")
    outcome, detail = verdict([], [DeadLetter("a", "")], LedgerRow("failed"), request=anything)
    assert outcome == "unexpected" and "without a reason" in detail


@pytest.mark.parametrize(
    ("copies", "dead", "row", "outcome"),
    [
        ([COPY], [], sent(), "delivered_once"),
        ([], [DeadLetter("a", "expired")], LedgerRow("failed", reason="expired"), "dead_lettered"),
        ([], [DeadLetter("a", "suppressed")], LedgerRow("failed"), "unexpected"),
        ([], [], CANCELLED, "unexpected"),
    ],
)
def test_alternatives_in_the_expectation(
    copies: list[Copy], dead: list[DeadLetter], row: LedgerRow, outcome: str
) -> None:
    either = Request("a", "a@x.test", "delivered|expired")
    assert verdict(copies, dead, row, request=either)[0] == outcome


def test_a_copy_before_not_before_is_unexpected_by_the_relays_clock() -> None:
    on_time = Request("a", "a@x.test", not_before=100.0)
    assert verdict([COPY], [], sent(), request=on_time)[0] == "delivered_once"
    late = Request("a", "a@x.test", not_before=100.25)
    outcome, detail = verdict([COPY], [], sent(), request=late)
    assert (outcome, detail) == ("unexpected", "sent 0.250 s before its send_at")
    # A duplicate copy counts too: the earliest one decides.
    twice = [Copy("a@x.test", "<m1@x>", True, 100.5), COPY]
    row = sent(events=("claimed", "unknown", "claimed", "sent"))
    assert verdict(twice, [], row, request=late)[0] == "unexpected"


@pytest.mark.parametrize(
    ("row", "outcome"),
    [
        (sent("throttled", attempts=1), "delivered_once"),
        (sent("throttled", "throttled", attempts=1), "delivered_once"),
        (sent("throttled", "smtp_transient", attempts=2), "delivered_once"),
        (sent("throttled", attempts=2), "unexpected"),  # the throttle spent an attempt
        (sent("throttled", "smtp_transient", attempts=3), "unexpected"),
        (sent("smtp_transient", attempts=2), "delivered_once"),  # not throttled: not judged
        # Other retries (a database outage) or a takeover: not judged here.
        (sent("throttled", "database_unavailable", attempts=3), "delivered_once"),
        (sent("throttled", attempts=4, events=("claimed", "taken_over", "sent")), "delivered_once"),
    ],
)
def test_throttling_spends_no_attempt(row: LedgerRow, outcome: str) -> None:
    assert verdict([COPY], [], row)[0] == outcome


def test_the_attempts_check_can_be_left_to_the_callbacks() -> None:
    row = sent("throttled", attempts=2)
    assert verdict([COPY], [], row, attempts_checked=False)[0] == "delivered_once"


def test_a_pending_callback_for_a_throttling_deferral_is_unexpected() -> None:
    row = sent("throttled", attempts=1)
    outcome, detail = verdict([COPY], [], row, callbacks=["pending", "delivered"])
    assert outcome == "unexpected" and "pending callback" in detail
    soft = sent("throttled", "smtp_transient", attempts=2)
    assert verdict([COPY], [], soft, callbacks=["pending", "delivered"])[0] == "delivered_once"


def test_different_dead_letter_reasons_pass_only_when_the_expectation_names_them_all() -> None:
    dead = [DeadLetter("a", "recipient_rejected"), DeadLetter("a", "suppressed")]
    row = LedgerRow("failed", reason="suppressed")
    both = Request("a", "a@x.test", "recipient_rejected|suppressed")
    assert verdict([], dead, row, request=both) == (
        "dead_lettered",
        "recipient_rejected+suppressed (2 records)",
    )
    one = Request("a", "a@x.test", "recipient_rejected")
    assert verdict([], dead, row, request=one)[0] == "unexpected"
