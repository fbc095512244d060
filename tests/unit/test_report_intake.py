"""What a report does, by kind and by who vouches for it: a signed provider's address is
suppressed whether or not the report ties to a request; a raw DSN/ARF report acts only through
the request it ties to, on the address that request was sent to."""

from __future__ import annotations

import pytest

from email_worker.reports.intake import ReportIntake
from email_worker.reports.model import Kind, Report
from tests.fakes import FakeNotifier, FakeReportLedger, FakeSuppressionList

ADA, MID = "ada@example.org", "<3f2a9c@acme.test>"


class World:
    def __init__(self) -> None:
        self.ledger = FakeReportLedger({MID: ("req-1", ADA)})
        self.suppressions = FakeSuppressionList()
        self.notifier = FakeNotifier()
        self.counted: list[tuple[str, str]] = []
        self.intake = ReportIntake(
            self.ledger,
            self.suppressions,
            self.notifier,
            lambda provider, kind: self.counted.append((provider, kind)),
        )


@pytest.mark.parametrize(
    ("kind", "suppressed", "status"),
    [
        (Kind.HARD_BOUNCE, "hard_bounce", "bounced"),
        (Kind.COMPLAINT, "complaint", "complained"),
        (Kind.UNSUBSCRIBE, "unsubscribe", None),
        (Kind.SOFT_BOUNCE, None, None),
    ],
)
def test_each_kind_from_a_signed_provider(
    kind: Kind, suppressed: str | None, status: str | None
) -> None:
    world = World()
    report = Report(kind, ADA, "5.1.1", "smtp; 550 no such user", (MID,))
    outcome = world.intake.take("ses", [report], vouched=True)
    added = [(ADA, suppressed, "ses", "5.1.1 smtp; 550 no such user")] if suppressed else []
    assert world.suppressions.added == added
    assert world.ledger.status == ({"req-1": status} if status else {})
    if status:
        assert world.ledger.errors == [("req-1", f"{status}: 5.1.1 smtp; 550 no such user")]
    assert world.notifier.handed_over == ([1] if status else [])
    assert world.counted == [("ses", kind.value)]
    assert outcome.body() == {
        "status": "accepted",
        "reports": 1,
        "suppressed": int(bool(suppressed)),
        "tied": int(bool(status)),
    }


def test_a_signed_report_suppresses_even_when_it_ties_to_nothing() -> None:
    world = World()
    world.intake.take("sendgrid", [Report(Kind.HARD_BOUNCE, "bob@example.org")], vouched=True)
    assert [a[0] for a in world.suppressions.added] == ["bob@example.org"]
    assert world.ledger.status == {}


def test_a_raw_report_that_ties_to_nothing_does_nothing() -> None:
    world = World()
    report = Report(Kind.HARD_BOUNCE, "bob@example.org", "5.1.1", "", ("<forged@acme.test>",))
    outcome = world.intake.take("dsn", [report], vouched=False)
    assert world.suppressions.added == [] and world.ledger.status == {}
    assert outcome.tied == 0 and world.counted == [("dsn", "hard_bounce")]


@pytest.mark.parametrize("named", ["someone-else@example.org", None])
def test_a_raw_report_suppresses_the_address_its_request_was_sent_to(named: str | None) -> None:
    world = World()
    report = Report(Kind.COMPLAINT, named, "abuse", "", (MID,))
    world.intake.take("dsn", [report], vouched=False)
    assert world.suppressions.added == [(ADA, "complaint", "dsn", "abuse")]
    assert world.ledger.status == {"req-1": "complained"}


def test_a_repeated_report_changes_the_request_once() -> None:
    world = World()
    report = Report(Kind.HARD_BOUNCE, ADA, "5.1.1", "", (MID,))
    world.intake.take("ses", [report, report], vouched=True)
    assert world.ledger.errors == [("req-1", "bounced: 5.1.1")]
    assert world.notifier.handed_over == [1]
    assert len(world.suppressions.added) == 2  # refreshed: last_seen moves, nothing else
