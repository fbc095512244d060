"""What a report does, by kind and by who vouches for it: a signed provider's address is
suppressed whether or not the report ties to a request; a raw DSN/ARF report acts only through
the request it ties to, on the address that request was sent to."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from email_worker.reports.intake import Intent, ReportIntake, Tied
from email_worker.reports.model import Kind, Report
from email_worker.webhooks.dispatch import WebhookDispatcher
from email_worker.webhooks.endpoints import SendGridEndpoint
from email_worker.webhooks.signatures import SendGridKey
from schemas.failures import DeferredFailure, Reason
from tests.fakes import FakeNotifier, FakeReportLedger, FakeSuppressionList
from tests.support import webhooks as w

ADA, MID = "ada@example.org", "<3f2a9c@acme.test>"
NOW = 1_780_000_000.0


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


class BatchLedger(FakeReportLedger):
    """A ``BatchLedger``: the fake's ties and the suppression entries in one call, kept only
    when it does not fail (``fail``: the ``DeferredFailure`` to raise instead)."""

    def __init__(self, suppressions: FakeSuppressionList) -> None:
        super().__init__({MID: ("req-1", ADA)})
        self.suppressions = suppressions
        self.calls = 0
        self.fail: DeferredFailure | None = None

    def record(self, source: str, intents: Sequence[Intent]) -> list[Tied | None]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        found = []
        for intent in intents:
            tied = self.tie(intent.report, intent.status, intent.error) if intent.status else None
            address = intent.suppresses(tied)
            if intent.reason is not None and address is not None:
                self.suppressions.add(address, intent.reason, source, intent.report.summary)
            found.append(tied)
        return found


MIXED = [
    Report(Kind.SOFT_BOUNCE, ADA, "4.2.2", "", (MID,)),
    Report(Kind.HARD_BOUNCE, ADA, "5.1.1", "no such user", (MID,)),
    Report(Kind.COMPLAINT, ADA, "abuse", "", (MID,)),
    Report(Kind.UNSUBSCRIBE, "bob@example.org"),
    Report(Kind.HARD_BOUNCE, "carl@example.org", "5.1.1", "", ("<unknown@acme.test>",)),
]


@pytest.mark.parametrize("vouched", [True, False])
def test_a_batch_ledger_records_all_reports_at_once_with_the_same_outcome(vouched: bool) -> None:
    one_by_one, batched = World(), World()
    batched.ledger = BatchLedger(batched.suppressions)
    intake = ReportIntake(
        batched.ledger,
        FakeSuppressionList(),  # unused: the batch ledger writes the entries itself
        batched.notifier,
        lambda provider, kind: batched.counted.append((provider, kind)),
    )
    expected = one_by_one.intake.take("sendgrid", MIXED, vouched=vouched)
    assert intake.take("sendgrid", MIXED, vouched=vouched) == expected
    assert batched.ledger.calls == 1
    assert batched.suppressions.added == one_by_one.suppressions.added
    assert batched.ledger.errors == one_by_one.ledger.errors
    assert batched.notifier.handed_over == one_by_one.notifier.handed_over == [1]
    assert batched.counted == one_by_one.counted and len(batched.counted) == len(MIXED)


def test_soft_bounces_alone_never_reach_the_batch_ledger() -> None:
    world = World()
    ledger = BatchLedger(world.suppressions)
    intake = ReportIntake(ledger, world.suppressions, world.notifier)
    outcome = intake.take("sendgrid", [MIXED[0]] * 3, vouched=True)
    assert (outcome.reports, outcome.suppressed, outcome.tied, ledger.calls) == (3, 0, 0, 0)


def test_a_failed_batch_hands_over_and_counts_nothing_and_its_retry_is_taken() -> None:
    world = World()
    ledger = BatchLedger(world.suppressions)
    counted: list[tuple[str, str]] = []
    intake = ReportIntake(
        ledger, world.suppressions, world.notifier, lambda p, k: counted.append((p, k))
    )
    signer = w.SendGridSigner()
    route = WebhookDispatcher(
        [SendGridEndpoint(SendGridKey.from_text(signer.public_key()), intake, ledger, lambda: NOW)]
    )
    events = [w.sendgrid_event("bounce", ADA, MID, type="bounce", status="5.1.1")] * 2
    signed = signer.post(events, int(NOW))
    headers = {name.lower(): value for name, value in signed.headers.items()}

    ledger.fail = DeferredFailure(Reason.DATABASE_UNAVAILABLE, "down")
    status, body, _, _ = route("POST", signed.path, headers, signed.body)
    assert status == 503 and json.loads(body)["error"] == "unavailable"
    assert (world.notifier.handed_over, counted, world.suppressions.added) == ([], [], [])

    ledger.fail = None  # the provider retries the whole POST: its claim was dropped
    status, body, _, _ = route("POST", signed.path, headers, signed.body)
    assert status == 200 and json.loads(body) == {
        "status": "accepted",
        "reports": 2,
        "suppressed": 2,
        "tied": 2,
    }
    assert world.notifier.handed_over == [1] and len(counted) == 2
