"""Scheduled, expiring and cancelled sends through the handler and the pipeline, on the fakes
(CONTRACT section 14): what is held, for how long, what is kept of it, what expires, and what a
cancelled request's message becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from email_worker.broker.retry_copies import keep
from email_worker.broker.settle import ATTEMPTS_HEADER, DEFERRALS_HEADER
from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Ack, DeadLetter, Hold, RetryPolicy
from email_worker.handler import Handler
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import (
    AlreadySent,
    Claim,
    Delivery,
    LedgerStatus,
    MessageProperties,
)
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import Reason
from schemas.request import EmailRequest
from templates_client.template import Template
from tests.fakes import FakeLedger, FakeMailer, FakeNotifier, FakeRecipients, FakeTemplates

WELCOME = Template("welcome", None, "Hello {{ name }}", "<p>Hi {{ name }}</p>", None, "v1")
START = datetime(2026, 12, 8, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, ledger: FakeLedger | None = None, max_days: int = 30) -> None:
        self.clock = Clock()
        self.ledger = ledger or FakeLedger()
        self.mailer = FakeMailer()
        self.notifier = FakeNotifier()
        config = PipelineConfig(
            sender="noreply@example.com",
            message_id_secret=b"k" * 32,
            callback_url="http://gateway.test/status/",
            callback_allowed_hosts=(),
            host_allowed=host_allowed,
            record_patience_seconds=0.1,
            clock=self.clock,
        )
        self.pipeline = Pipeline(
            config,
            self.ledger,
            FakeRecipients(),
            FakeTemplates({"welcome": WELCOME}),
            TemplateRenderer(),
            self.mailer,
            self.notifier,
        )
        self.handler = Handler(
            self.pipeline,
            RetryPolicy(max_attempts=3, delays=(5.0, 30.0)),
            keep,
            max_message_bytes=262_144,
            max_schedule_days=max_days,
            clock=self.clock,
        )

    def handle(self, raw: bytes, attempts: int = 0, deferrals: int = 0) -> Any:
        delivery = Delivery(raw, MessageProperties(), 1, 1, False, attempts, deferrals, None)
        return self.handler.handle(delivery)


def body(**fields: Any) -> bytes:
    message = {
        "request_id": "req-1",
        "template_code": "welcome",
        "to": "ada@example.com",
        "variables": {"name": "Ada"},
    }
    return json.dumps({**message, **fields}).encode()


def at(delta: timedelta) -> str:
    return (START + delta).isoformat()


def test_a_send_at_ahead_is_held_in_the_ledger_with_its_copy_and_no_callback() -> None:
    world = World()
    raw = body(send_at=at(timedelta(minutes=10)))
    decision = world.handle(raw, attempts=1, deferrals=2)
    assert decision == Hold(600.0, 1, 2)
    assert world.ledger.rows["req-1"].status == LedgerStatus.SCHEDULED
    (record,) = world.ledger.rows["req-1"].records
    assert record.callback is None
    assert world.ledger.outbox == [] and world.notifier.handed_over == []
    assert record.retry is not None
    assert record.retry.due_in == 600.0
    assert record.retry.body == raw  # byte for byte
    headers = record.retry.properties["headers"]
    assert isinstance(headers, dict)
    assert (headers[ATTEMPTS_HEADER], headers[DEFERRALS_HEADER]) == (1, 2)  # carried unchanged
    assert world.mailer.sent == []


def test_the_released_copy_is_sent_once_its_send_at_came() -> None:
    world = World()
    raw = body(send_at=at(timedelta(minutes=10)))
    assert isinstance(world.handle(raw), Hold)
    world.clock.now = START + timedelta(minutes=10, seconds=2)
    assert world.handle(raw) == Ack("delivered")
    assert len(world.mailer.sent) == 1
    assert world.ledger.outbox == [("req-1", "delivered")]


@pytest.mark.parametrize(
    "send_at", [timedelta(seconds=0), timedelta(hours=-5), timedelta(days=-400)]
)
def test_a_send_at_now_or_past_is_sent_now(send_at: timedelta) -> None:
    world = World()
    assert world.handle(body(send_at=at(send_at))) == Ack("delivered")
    assert len(world.mailer.sent) == 1


def test_a_send_at_a_second_and_a_bit_ahead_is_held() -> None:
    world = World()
    assert world.handle(body(send_at=at(timedelta(seconds=1.5)))) == Hold(1.5, 0, 0)


def test_a_send_at_a_moment_ahead_is_held_too_never_sent_early() -> None:
    world = World()
    assert world.handle(body(send_at=at(timedelta(seconds=1)))) == Hold(1.0, 0, 0)
    assert world.mailer.sent == []


def test_an_expired_request_is_dead_lettered_with_a_failed_callback() -> None:
    world = World()
    decision = world.handle(body(expires_at=at(timedelta(seconds=-1))))
    assert isinstance(decision, DeadLetter)
    assert decision.reason == Reason.EXPIRED
    assert world.ledger.rows["req-1"].status == LedgerStatus.FAILED
    assert world.ledger.outbox == [("req-1", "failed")]
    assert world.mailer.sent == []


def test_a_hold_ends_at_expires_at_when_that_comes_first_then_expires() -> None:
    world = World()
    raw = body(send_at=at(timedelta(hours=2)), expires_at=at(timedelta(minutes=30)))
    assert world.handle(raw) == Hold(1800.0, 0, 0)
    world.clock.now = START + timedelta(minutes=30)
    decision = world.handle(raw)
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.EXPIRED
    assert world.mailer.sent == []


def test_an_expires_at_still_ahead_does_not_stop_a_due_send() -> None:
    world = World()
    assert world.handle(body(expires_at=at(timedelta(minutes=1)))) == Ack("delivered")


def test_send_at_beyond_max_schedule_days_is_an_invalid_message() -> None:
    world = World(max_days=7)
    decision = world.handle(body(send_at=at(timedelta(days=7, seconds=1))))
    assert isinstance(decision, DeadLetter)
    assert decision.reason == Reason.INVALID_MESSAGE
    assert "MAX_SCHEDULE_DAYS" in decision.detail
    assert world.ledger.rejections == [("req-1", Reason.INVALID_MESSAGE)]
    assert World(max_days=8).handle(body(send_at=at(timedelta(days=7, seconds=1)))) == Hold(
        timedelta(days=7, seconds=1).total_seconds(), 0, 0
    )


class CancelledLedger(FakeLedger):
    """The ledger's answer for a request cancelled before its message arrived."""

    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        return AlreadySent(request.request_id, None, outcome="cancelled")


def test_a_cancelled_request_is_acked_as_cancelled_and_never_sent() -> None:
    world = World(CancelledLedger())
    assert world.handle(body(send_at=at(timedelta(minutes=5)))) == Ack("cancelled")
    assert world.handle(body()) == Ack("cancelled")
    assert world.mailer.sent == [] and world.ledger.outbox == []
