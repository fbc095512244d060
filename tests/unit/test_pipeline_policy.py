"""The delivery-policy hooks of the pipeline (CONTRACT 12-15) over in-memory fakes: a held
scheduled send, an expired request, the suppression list, and what the pacer is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Hold, Retry, RetryPolicy, decide
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import LedgerStatus
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import (
    PermanentFailure,
    Reason,
    ThrottledFailure,
    TransientFailure,
    WorkerFailure,
)
from schemas.request import EmailRequest
from templates_client.template import Template
from tests.fakes import (
    FakeLedger,
    FakeMailer,
    FakeNotifier,
    FakeRecipients,
    FakeTemplates,
    email_request,
)

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
WELCOME = Template("welcome", None, "Hello", "<p>Hi</p>", None, "v1")


class RecordingPacer:
    def __init__(self, refuse: ThrottledFailure | None = None) -> None:
        self.turns: list[tuple[str, int]] = []
        self.reports: list[tuple[str, WorkerFailure | None]] = []
        self.refuse = refuse

    def wait_turn(self, domain: str, priority: int) -> None:
        self.turns.append((domain, priority))
        if self.refuse is not None:
            raise self.refuse

    def report(self, domain: str, failure: WorkerFailure | None) -> None:
        self.reports.append((domain, failure))


class ListedSuppressions:
    def __init__(self, listed: dict[str, str] | None = None) -> None:
        self.listed = dict(listed or {})
        self.bounced: list[str] = []

    def check(self, address: str) -> str | None:
        return self.listed.get(address)

    def hard_bounce(self, address: str, detail: str) -> None:
        self.bounced.append(address)


class World:
    def __init__(
        self,
        *script: WorkerFailure,
        pacer: RecordingPacer | None = None,
        suppressions: ListedSuppressions | None = None,
    ) -> None:
        self.ledger, self.mailer = FakeLedger(), FakeMailer(*script)
        self.pacer = pacer or RecordingPacer()
        self.suppressions = suppressions or ListedSuppressions()
        self.pipeline = Pipeline(
            PipelineConfig(
                sender="noreply@example.com",
                message_id_secret=b"k" * 32,
                callback_url="http://gateway.test/status/",
                callback_allowed_hosts=(),
                host_allowed=host_allowed,
                clock=lambda: NOW,
            ),
            self.ledger,
            FakeRecipients({}),
            FakeTemplates({"welcome": WELCOME}),
            TemplateRenderer(),
            self.mailer,
            FakeNotifier(),
            pacer=self.pacer,
            suppressions=self.suppressions,
        )


def request(**fields: object) -> EmailRequest:
    return email_request("req-1").model_copy(update=fields)


def test_a_send_at_ahead_is_held_and_recorded_scheduled_without_a_callback() -> None:
    world = World()
    attempt = world.pipeline.attempt(request(send_at=NOW + timedelta(hours=2)))
    assert attempt.hold_until == NOW + timedelta(hours=2)
    assert attempt.failure is None and world.mailer.sent == [] and world.pacer.turns == []
    record = attempt.record(Hold(7200.0, 0, 0))
    assert record.status == LedgerStatus.SCHEDULED and record.callback is None


@pytest.mark.parametrize("ahead", [timedelta(seconds=-30), timedelta(0)])
def test_a_send_at_now_or_past_is_sent_now(ahead: timedelta) -> None:
    world = World()
    attempt = world.pipeline.attempt(request(send_at=NOW + ahead))
    assert attempt.hold_until is None and len(world.mailer.sent) == 1


def test_an_expired_request_fails_with_expired_and_is_not_sent() -> None:
    world = World()
    attempt = world.pipeline.attempt(request(expires_at=NOW - timedelta(seconds=1)))
    assert isinstance(attempt.failure, PermanentFailure)
    assert attempt.failure.reason == Reason.EXPIRED
    assert world.mailer.sent == []


def test_a_suppressed_recipient_fails_without_reaching_the_pacer_or_the_relay() -> None:
    world = World(suppressions=ListedSuppressions({"ada@example.com": "hard_bounce"}))
    attempt = world.pipeline.attempt(request())
    assert isinstance(attempt.failure, PermanentFailure)
    assert attempt.failure.reason == Reason.SUPPRESSED
    assert attempt.failure.detail == "hard_bounce"
    assert world.mailer.sent == [] and world.pacer.turns == []


@pytest.mark.parametrize(
    ("detail", "suppressed"),
    [("550 5.1.1 at RCPT", True), ("550 5.7.1 at RCPT", False), ("550 at RCPT", False)],
)
def test_only_a_5_1_x_recipient_refusal_is_a_hard_bounce(detail: str, suppressed: bool) -> None:
    world = World(PermanentFailure(Reason.RECIPIENT_REJECTED, detail))
    world.pipeline.attempt(request())
    assert world.suppressions.bounced == (["ada@example.com"] if suppressed else [])


def test_the_pacer_gets_the_domain_and_the_higher_priority_and_hears_the_result() -> None:
    throttled = ThrottledFailure("relay", "421 4.7.0 at MAIL")
    world = World(throttled)
    attempt = world.pipeline.attempt(request(priority=2), amqp_priority=8)
    assert world.pacer.turns == [("example.com", 8)]
    assert world.pacer.reports == [("example.com", throttled)]
    assert attempt.failure is throttled
    world.pipeline.attempt(request(request_id="req-2"))
    assert world.pacer.reports[-1] == ("example.com", None)


def test_a_token_too_far_ahead_defers_without_sending() -> None:
    world = World(pacer=RecordingPacer(ThrottledFailure("relay", "token in 40 s", retry_after=40)))
    attempt = world.pipeline.attempt(request())
    assert isinstance(attempt.failure, ThrottledFailure) and world.mailer.sent == []


POLICY = RetryPolicy(max_attempts=3, delays=(5.0, 30.0, 120.0), max_deferrals=2, jitter=0.0)


@pytest.mark.parametrize(
    ("retry_after", "queue_delay"), [(None, 5.0), (5.0, 5.0), (6.0, 30.0), (9999.0, 120.0)]
)
def test_throttling_waits_in_the_delay_queue_that_covers_the_advice(
    retry_after: float | None, queue_delay: float
) -> None:
    decision = decide(ThrottledFailure("relay", retry_after=retry_after), 1, 1, POLICY)
    assert isinstance(decision, Retry) and decision.queue_delay == queue_delay


def test_throttling_spends_no_attempt_and_no_deferral_however_often() -> None:
    decision = decide(ThrottledFailure("domain:example.com"), 2, 2, POLICY)
    assert isinstance(decision, Retry)
    assert (decision.attempts, decision.deferrals, decision.pause) == (2, 2, False)
    # The same counts with an ordinary transient failure would have exhausted the message.
    assert not isinstance(decide(TransientFailure(Reason.SMTP_TRANSIENT), 2, 2, POLICY), Retry)


@pytest.mark.parametrize("ahead", [timedelta(milliseconds=1), timedelta(milliseconds=900)])
def test_a_send_at_even_slightly_ahead_is_held_never_sent_early(ahead: timedelta) -> None:
    world = World()
    attempt = world.pipeline.attempt(request(send_at=NOW + ahead))
    assert attempt.hold_until == NOW + ahead and world.mailer.sent == []
