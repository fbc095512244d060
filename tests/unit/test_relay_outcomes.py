"""The relay router under the real handler and pipeline (in-memory ledger): a failover is one
claim with a ``delivered`` callback only, and the relay is named in the record and in the
outcome log line; a refusal names the relay that refused."""

from __future__ import annotations

import json
import logging

import pytest

from email_worker.broker.retry_copies import keep
from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Ack, DeadLetter, RetryPolicy
from email_worker.handler import Handler
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Delivery, MessageProperties
from email_worker.relays.router import Relay, RelayRouter
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import PermanentFailure, Reason, RelayUnavailable
from templates_client.template import Template
from tests.fakes import FakeLedger, FakeNotifier, FakeRecipients, FakeRelay, FakeTemplates

WELCOME = Template("welcome", None, "Hello {{ name }}", "<p>Hi</p>", None, "v1")


def handler(router: RelayRouter, ledger: FakeLedger) -> Handler:
    pipeline = Pipeline(
        PipelineConfig(
            sender="noreply@example.com",
            message_id_secret=b"k" * 32,
            callback_url="http://gateway.test/status/",
            callback_allowed_hosts=(),
            host_allowed=host_allowed,
        ),
        ledger,
        FakeRecipients(),
        FakeTemplates({"welcome": WELCOME}),
        TemplateRenderer(),
        router,
        FakeNotifier(),
    )
    policy = RetryPolicy(max_attempts=3, delays=(5.0,))
    return Handler(pipeline, policy, keep, max_message_bytes=262_144)


def delivery() -> Delivery:
    body = {
        "request_id": "req-1",
        "template_code": "welcome",
        "to_email": "ada@example.com",
        "variables": {"name": "Ada"},
    }
    return Delivery(json.dumps(body).encode(), MessageProperties(), 1, 1, False, 0, 0, None)


def router(*transports: FakeRelay) -> RelayRouter:
    names = ["smtp://a:25", "smtp://b:25"]
    relays = [Relay(name, t) for name, t in zip(names, transports, strict=False)]
    return RelayRouter(relays, fail_max=3, reset_seconds=30)


def test_a_failover_is_one_attempt_named_after_the_relay_that_took_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = FakeLedger()
    down = RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connect failed: ConnectionRefusedError")
    with caplog.at_level(logging.INFO, logger="email_worker.outcome"):
        decision = handler(router(FakeRelay(down), FakeRelay()), ledger).handle(delivery())
    assert decision == Ack("delivered")
    row = ledger.rows["req-1"]
    assert row.attempts == 1 and [r.relay for r in row.records] == ["smtp://b:25"]
    assert ledger.outbox == [("req-1", "delivered")]  # no `pending`: nothing was spent
    (line,) = [r for r in caplog.records if r.name == "email_worker.outcome"]
    assert line.__dict__["relay"] == "smtp://b:25" and line.__dict__["outcome"] == "delivered"


def test_a_refusal_is_recorded_with_the_relay_that_refused() -> None:
    ledger = FakeLedger()
    refusal = PermanentFailure(Reason.RECIPIENT_REJECTED, "550 5.1.1 at RCPT")
    second = FakeRelay()
    decision = handler(router(FakeRelay(refusal), second), ledger).handle(delivery())
    assert isinstance(decision, DeadLetter) and decision.reason is Reason.RECIPIENT_REJECTED
    assert [r.relay for r in ledger.rows["req-1"].records] == ["smtp://a:25"]
    assert second.sends == 0
