"""The pipeline's data path over in-memory fakes: every message ends in exactly one place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from email_worker.broker.retry_copies import keep
from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Ack, DeadLetter, Retry, RetryPolicy
from email_worker.handler import Handler
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Delivery, LedgerStatus, MessageProperties, Recipient
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
    WorkerFailure,
)
from templates_client.template import Template
from tests.fakes import FakeLedger, FakeMailer, FakeNotifier, FakeRecipients, FakeTemplates

WELCOME = Template("welcome", None, "Hello {{ name }}", "<p>Hi {{ name }}</p>", None, "v1")
CALLBACK = "http://gateway.test/api/v1/email/status/"


def body(**overrides: Any) -> bytes:
    message = {
        "request_id": "req-1",
        "template_code": "welcome",
        "to_email": "ada@example.com",
        "variables": {"name": "Ada"},
    }
    message.update(overrides)
    return json.dumps(message).encode()


def delivery(raw: bytes, attempts: int = 0, deferrals: int = 0) -> Delivery:
    return Delivery(raw, MessageProperties(), 1, 1, False, attempts, deferrals, None)


class World:
    def __init__(self, *mailer_script: WorkerFailure | Exception, **templates: Any) -> None:
        self.ledger = FakeLedger()
        self.mailer = FakeMailer(*mailer_script)
        self.notifier = FakeNotifier()
        self.templates = FakeTemplates(templates or {"welcome": WELCOME})
        self.recipients = FakeRecipients(
            {
                "u-1": Recipient("grace@example.com", "Grace"),
                "u-out": PermanentFailure(Reason.OPTED_OUT, "user opted out"),
            }
        )
        self.pipeline = Pipeline(
            PipelineConfig(
                sender="noreply@example.com",
                message_id_secret=b"k" * 32,
                callback_url=CALLBACK,
                callback_allowed_hosts=(),
                host_allowed=host_allowed,
                record_patience_seconds=0.1,
            ),
            self.ledger,
            self.recipients,
            self.templates,
            TemplateRenderer(),
            self.mailer,
            self.notifier,
        )
        self.handler = Handler(
            self.pipeline,
            RetryPolicy(max_attempts=3, delays=(5.0, 30.0), max_deferrals=5),
            keep,
            max_message_bytes=262_144,
        )

    def status(self, request_id: str = "req-1") -> LedgerStatus:
        return self.ledger.rows[request_id].status


def test_delivered_records_sent_and_hands_over_a_delivered_callback() -> None:
    world = World()
    decision = world.handler.handle(delivery(body()))
    assert decision == Ack("delivered")
    assert world.status() == LedgerStatus.SENT
    (sent,) = world.mailer.sent
    assert sent.recipient == "ada@example.com"
    assert sent.content.subject == "Hello Ada"
    assert world.ledger.outbox == [("req-1", "delivered")]
    assert world.notifier.handed_over == [1]
    record = world.ledger.rows["req-1"].records[-1]
    assert record.message_id == sent.message_id
    assert (record.smtp_reply or "").startswith("250")


def test_duplicate_is_acked_without_sending_again() -> None:
    world = World()
    world.handler.handle(delivery(body()))
    assert world.handler.handle(delivery(body())) == Ack("duplicate")
    assert len(world.mailer.sent) == 1


def test_same_id_different_payload_is_a_conflict() -> None:
    world = World()
    world.handler.handle(delivery(body()))
    decision = world.handler.handle(delivery(body(variables={"name": "Eve"})))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.IDEMPOTENCY_CONFLICT
    assert len(world.mailer.sent) == 1
    assert world.status() == LedgerStatus.SENT


def test_invalid_json_is_dead_lettered_with_its_reason() -> None:
    decision = World().handler.handle(delivery(b'{"request_id": "x", '))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.INVALID_JSON


def test_recipient_from_user_service_supplies_the_name() -> None:
    world = World()
    raw = json.dumps({"request_id": "req-1", "template_code": "welcome", "user_id": "u-1"})
    assert world.handler.handle(delivery(raw.encode())) == Ack("delivered")
    assert world.mailer.sent[0].content.subject == "Hello Grace"


def test_opted_out_user_fails_and_nothing_is_sent() -> None:
    world = World()
    raw = json.dumps({"request_id": "req-1", "template_code": "welcome", "user_id": "u-out"})
    decision = world.handler.handle(delivery(raw.encode()))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.OPTED_OUT
    assert world.mailer.sent == [] and world.status() == LedgerStatus.FAILED
    assert world.ledger.outbox == [("req-1", "failed")]


def test_template_not_found_is_permanent() -> None:
    decision = World().handler.handle(delivery(body(template_code="missing")))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.TEMPLATE_NOT_FOUND


def test_transient_smtp_failure_schedules_a_retry_and_reports_pending() -> None:
    world = World(TransientFailure(Reason.SMTP_TRANSIENT, "451 at RCPT"))
    decision = world.handler.handle(delivery(body()))
    assert isinstance(decision, Retry) and decision.attempts == 1
    assert world.status() == LedgerStatus.PENDING
    assert world.ledger.outbox == [("req-1", "pending")]
    assert world.handler.handle(delivery(body(), attempts=1)) == Ack("delivered")
    assert world.ledger.outbox[-1] == ("req-1", "delivered")


def test_ambiguous_delivery_is_recorded_unknown_and_resent_with_the_same_message_id() -> None:
    world = World(AmbiguousDelivery(Reason.SMTP_UNKNOWN, "lost after DATA"))
    first = world.handler.handle(delivery(body()))
    assert isinstance(first, Retry) and world.status() == LedgerStatus.UNKNOWN
    unknown_id = world.ledger.rows["req-1"].records[-1].message_id
    world.handler.handle(delivery(body(), attempts=1))
    assert world.mailer.sent[0].message_id == unknown_id


def test_last_attempt_dead_letters_as_retries_exhausted() -> None:
    world = World(TransientFailure(Reason.SMTP_TRANSIENT, "451"))
    decision = world.handler.handle(delivery(body(), attempts=2))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.RETRIES_EXHAUSTED
    assert world.status() == LedgerStatus.FAILED


def test_breaker_open_defers_without_counting_an_attempt() -> None:
    world = World(welcome=DeferredFailure(Reason.TEMPLATE_SERVICE_UNAVAILABLE, "breaker open"))
    decision = world.handler.handle(delivery(body(), attempts=2))
    assert isinstance(decision, Retry) and (decision.attempts, decision.deferrals) == (2, 1)


def test_systemic_smtp_failure_asks_to_pause() -> None:
    decision = World(SystemicFailure(Reason.SMTP_AUTH_FAILED, "535")).handler.handle(
        delivery(body())
    )
    assert isinstance(decision, Retry) and decision.pause


def test_a_bug_in_an_adapter_retries_instead_of_crashing() -> None:
    world = World(RuntimeError("boom"))
    decision = world.handler.handle(delivery(body()))
    assert isinstance(decision, Retry) and decision.reason == Reason.INTERNAL_ERROR


def test_lost_lease_never_acks_as_delivered() -> None:
    world = World()
    world.ledger.fail_finish = DeferredFailure(Reason.LEASE_LOST, "taken over")
    decision = world.handler.handle(delivery(body()))
    assert isinstance(decision, Retry) and decision.reason == Reason.LEASE_LOST
    assert world.notifier.handed_over == []


def test_header_injection_through_a_variable_is_unsafe_content() -> None:
    world = World()
    decision = world.handler.handle(delivery(body(variables={"name": "x\r\nBcc: e@evil.test"})))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.UNSAFE_CONTENT
    assert world.mailer.sent == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://evil.test/cb"])
def test_message_callback_urls_off_the_allow_list_are_ignored(url: str) -> None:
    world = World()
    world.handler.handle(delivery(body(callback_url=url)))
    assert world.ledger.rows["req-1"].records[-1].callback_url == CALLBACK
