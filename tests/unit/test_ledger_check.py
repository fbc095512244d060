"""The ledger checker's classifier on synthetic observations: every class, every trap."""

from __future__ import annotations

import pytest

from tests.support.ledger_check import (
    ANY,
    Copy,
    DeadLetter,
    LedgerRow,
    Observations,
    Request,
    classify,
)

A = Request("a", "a@x.test")
SENT = LedgerRow("sent", "<m1@x>", ("claimed", "sent"))


def verdict(
    copies: list[Copy],
    dead: list[DeadLetter],
    row: LedgerRow | None,
    *,
    request: Request = A,
    callbacks: list[str] | None = None,
) -> tuple[str, str]:
    ledger = {} if row is None else {request.key: row}
    cb = None if callbacks is None else {request.key: callbacks}
    report = classify([request], Observations(copies, dead, ledger, cb))
    (only,) = report.verdicts
    return only.outcome, only.detail


@pytest.mark.parametrize(
    ("copies", "dead", "row", "request_", "outcome"),
    [
        ([Copy("a@x.test", "<m1@x>")], [], SENT, A, "delivered_once"),
        ([Copy("A@X.test", "<m1@x>")], [], SENT, A, "delivered_once"),  # address case
        ([], [], None, A, "lost"),
        ([], [], LedgerRow("sending"), A, "lost"),
        ([], [], SENT, A, "lost"),  # the ledger says sent, the relay has nothing
        ([], [DeadLetter("a", "recipient_rejected")], LedgerRow("failed"), A, "unexpected"),
        (
            [],
            [DeadLetter("a", "recipient_rejected")],
            LedgerRow("failed"),
            Request("a", "a@x.test", "recipient_rejected"),
            "dead_lettered",
        ),
        (
            [],
            [DeadLetter("a", "invalid_json")],
            None,
            Request("a", None, "recipient_rejected"),
            "unexpected",  # dead-lettered, but for another reason than expected
        ),
        (
            [],
            [DeadLetter("a", "x"), DeadLetter("a", "y")],
            None,
            Request("a", None, ANY),
            "unexpected",
        ),
        (
            [Copy("a@x.test", "<m1@x>"), Copy("a@x.test", "<m1@x>")],
            [],
            LedgerRow("sent", "<m1@x>", ("claimed", "unknown", "claimed", "sent")),
            A,
            "duplicated",
        ),
        (
            [Copy("a@x.test", "<m1@x>"), Copy("a@x.test", "<m1@x>")],
            [],
            LedgerRow("sent", "<m1@x>", ("claimed", "taken_over", "sent")),
            A,
            "duplicated",
        ),
        (
            [Copy("a@x.test", "<m1@x>", ambiguous=True), Copy("a@x.test", "<m1@x>")],
            [],
            SENT,
            A,
            "duplicated",  # the relay itself says the first copy was never acknowledged
        ),
        (
            [Copy("a@x.test", "<m1@x>"), Copy("a@x.test", "<m1@x>")],
            [],
            SENT,
            A,
            "unexpected",  # a duplicate without any ambiguous outcome
        ),
        (
            [Copy("a@x.test", "<m1@x>"), Copy("a@x.test", "<m2@x>")],
            [],
            LedgerRow("sent", "<m1@x>", ("unknown",)),
            A,
            "unexpected",  # a duplicate with two Message-IDs is never allowed
        ),
        ([Copy("a@x.test", "<m9@x>")], [], SENT, A, "unexpected"),  # ledger's id differs
        ([Copy("a@x.test", "<m1@x>")], [], LedgerRow("failed", "<m1@x>"), A, "unexpected"),
        (
            [Copy("a@x.test", "<m1@x>")],
            [DeadLetter("a", "retries_exhausted")],
            LedgerRow("failed", "<m1@x>", ("unknown",)),
            Request("a", "a@x.test", ANY),
            "unexpected",  # the relay acknowledged it, yet it was dead-lettered
        ),
        (
            [Copy("a@x.test", "<m1@x>", ambiguous=True)],
            [DeadLetter("a", "retries_exhausted")],
            LedgerRow("failed", "<m1@x>", ("unknown", "failed")),
            Request("a", "a@x.test", "retries_exhausted"),
            "dead_lettered",  # never acknowledged, recorded unknown: honest dead letter
        ),
        (
            [Copy("a@x.test", "<m1@x>", ambiguous=True)],
            [DeadLetter("a", "retries_exhausted")],
            LedgerRow("failed", "<m1@x>", ("failed",)),
            Request("a", "a@x.test", ANY),
            "unexpected",  # the ledger never admitted the ambiguity
        ),
        (
            [],
            [DeadLetter("a", "message_rejected")],
            LedgerRow("failed"),
            Request("a", "a@x.test", "delivered"),
            "unexpected",
        ),
    ],
)
def test_classification(
    copies: list[Copy],
    dead: list[DeadLetter],
    row: LedgerRow | None,
    request_: Request,
    outcome: str,
) -> None:
    assert verdict(copies, dead, row, request=request_)[0] == outcome


def test_every_request_gets_exactly_one_verdict_and_strays_are_unexpected() -> None:
    requests = [Request("a", "a@x.test"), Request("b", None, "invalid_json")]
    seen = Observations(
        copies=[Copy("a@x.test", "<m1@x>"), Copy("stranger@x.test", "<m7@x>")],
        dead_letters=[DeadLetter("b", "invalid_json"), DeadLetter(None, "delivery_limit")],
        ledger={"a": SENT},
    )
    report = classify(requests, seen)
    assert [v.key for v in report.verdicts] == ["a", "b"]
    assert report.counts["delivered_once"] == 1 and report.counts["dead_lettered"] == 1
    assert len(report.strays) == 2 and report.counts["unexpected"] == 2
    assert not report.ok
    assert "stray" in report.summary()


def test_a_clean_run_passes_and_a_lost_request_fails() -> None:
    requests = [Request("a", "a@x.test"), Request("b", "b@x.test")]
    clean = Observations(
        [Copy("a@x.test", "<m1@x>"), Copy("b@x.test", "<m2@x>")],
        [],
        {"a": SENT, "b": LedgerRow("sent", "<m2@x>")},
    )
    assert classify(requests, clean).ok
    lossy = Observations([Copy("a@x.test", "<m1@x>")], [], {"a": SENT})
    report = classify(requests, lossy)
    assert not report.ok and report.of("b").outcome == "lost"
    assert report.counts["lost"] == 1


@pytest.mark.parametrize(
    ("callbacks", "outcome"),
    [
        (["delivered"], "delivered_once"),
        (["pending", "delivered"], "delivered_once"),
        (["delivered", "delivered"], "delivered_once"),  # at least once: same status again
        ([], "unexpected"),  # the gateway never heard
        (["pending"], "unexpected"),
        (["delivered", "pending"], "unexpected"),  # moved backwards
        (["failed"], "unexpected"),
    ],
)
def test_callbacks_must_end_in_the_matching_status(callbacks: list[str], outcome: str) -> None:
    got = verdict([Copy("a@x.test", "<m1@x>")], [], SENT, callbacks=callbacks)
    assert got[0] == outcome


def test_a_dead_letter_needs_a_failed_callback_when_the_ledger_knows_the_request() -> None:
    request = Request("a", "a@x.test", "opted_out")
    dead = [DeadLetter("a", "opted_out")]
    failed = LedgerRow("failed")
    assert verdict([], dead, failed, request=request, callbacks=["failed"])[0] == "dead_lettered"
    assert verdict([], dead, failed, request=request, callbacks=["pending"])[0] == "unexpected"
    # No ledger row (the body had no readable id): no callback is owed.
    assert verdict([], dead, None, request=request, callbacks=[])[0] == "dead_lettered"
