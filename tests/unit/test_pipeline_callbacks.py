"""Which status callbacks the pipeline records (CONTRACT section 7), over in-memory fakes:
``pending`` once per counted attempt and never for a deferral; a ``failed`` callback for a
message refused as invalid that still carries an id, in any accepted shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from email_worker.disposition import DeadLetter, Retry
from email_worker.ports import Delivery, LedgerStatus, MessageProperties
from schemas.failures import (
    DeferredFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
    WorkerFailure,
)
from tests.fakes import FakeLedger
from tests.unit.test_pipeline import World, body, delivery


@pytest.mark.parametrize(
    "deferral",
    [
        DeferredFailure(Reason.TEMPLATE_SERVICE_UNAVAILABLE, "breaker open"),
        SystemicFailure(Reason.SMTP_AUTH_FAILED, "535"),  # consumption pauses
    ],
    ids=["breaker-open", "paused"],
)
def test_a_deferral_records_pending_but_sends_no_pending(deferral: WorkerFailure) -> None:
    world = World(deferral, deferral, TransientFailure(Reason.SMTP_TRANSIENT, "451"))
    for deferrals in range(2):
        decision = world.handler.handle(delivery(body(), deferrals=deferrals))
        assert isinstance(decision, Retry) and decision.attempts == 0
        assert world.status() == LedgerStatus.PENDING
    assert world.ledger.outbox == []
    assert world.notifier.handed_over == []
    counted = world.handler.handle(delivery(body(), deferrals=2))
    assert isinstance(counted, Retry) and counted.attempts == 1
    assert world.ledger.outbox == [("req-1", "pending")]  # one per counted attempt


def test_too_many_deferrals_still_end_with_a_failed_callback() -> None:
    breaker = DeferredFailure(Reason.TEMPLATE_SERVICE_UNAVAILABLE, "breaker open")
    world = World(welcome=breaker)
    decision = world.handler.handle(delivery(body(), deferrals=5))  # max_deferrals is 5
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.RETRIES_EXHAUSTED
    assert world.ledger.outbox == [("req-1", "failed")]


class RecordingLedger(FakeLedger):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[tuple[str, str, str, str]] = []

    def reject(
        self,
        request_id: str,
        notification_id: str,
        correlation_id: str,
        reason: Reason,
        detail: str,
        callback_url: str | None,
    ) -> int | None:
        self.rejected.append((request_id, notification_id, correlation_id, f"{reason}: {detail}"))
        return super().reject(
            request_id, notification_id, correlation_id, reason, detail, callback_url
        )


def invalid(data: dict[str, Any], **properties: Any) -> Delivery:
    raw = json.dumps(data).encode()
    return Delivery(raw, MessageProperties(**properties), 1, 1, False, 0, 0, None)


NEST = {"pattern": "email.send", "data": {"notificationId": "n-1", "templateCode": "welcome"}}


@pytest.mark.parametrize(
    ("message", "properties", "expected"),
    [
        (NEST, {}, ("n-1", "n-1", "n-1")),
        (NEST, {"correlation_id": "c-9", "message_id": "m-9"}, ("n-1", "n-1", "c-9")),
        (
            {"success": True, "data": {"requestId": "r-1", "correlationId": "c-1", "to": 5}},
            {},
            ("r-1", "r-1", "c-1"),
        ),
        ({"template_code": "welcome", "correlation_id": "c-2"}, {}, ("c-2", "c-2", "c-2")),
        ({"template_code": "welcome"}, {"message_id": "m-3"}, ("m-3", "m-3", "m-3")),
        ({"template_code": "welcome"}, {"correlation_id": "c-4"}, ("c-4", "c-4", "c-4")),
    ],
    ids=["nest", "nest-amqp", "gateway-envelope", "correlation", "message-id", "amqp-corr"],
)
def test_an_invalid_message_with_an_id_gets_a_failed_callback(
    message: dict[str, Any], properties: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    world = World()
    world.ledger = RecordingLedger()
    world.pipeline._ledger = world.ledger
    decision = world.handler.handle(invalid(message, **properties))
    assert isinstance(decision, DeadLetter) and decision.reason == Reason.INVALID_MESSAGE
    ((key, notification_id, correlation_id, error),) = world.ledger.rejected
    assert (key, notification_id, correlation_id) == expected
    assert error.startswith("invalid_message: ")
    assert world.ledger.outbox == [(key, "failed")]
    assert world.notifier.handed_over == [1]


def test_an_invalid_message_without_any_id_gets_no_callback() -> None:
    world = World()
    decision = world.handler.handle(invalid({"template_code": "welcome"}, message_id="a\nb"))
    assert isinstance(decision, DeadLetter)
    assert world.ledger.rejections == [] and world.ledger.outbox == []
