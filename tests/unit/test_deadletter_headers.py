"""Dead-letter headers: written by the worker, read back tolerantly, including records the
broker dead-lettered on its own (delivery limit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas.deadletter import DeadLetterHeaders, rfc3339

WRITTEN = DeadLetterHeaders(
    failure_reason="recipient_invalid",
    failure_detail="to: several addresses are not allowed",
    attempts=1,
    first_attempt_at="2026-11-23T10:00:00Z",
    failed_at="2026-11-23T10:00:01Z",
    request_id="req-1",
)


def test_round_trip_through_amqp_headers() -> None:
    headers = WRITTEN.to_amqp()
    assert headers == {
        "failure_reason": "recipient_invalid",
        "failure_detail": "to: several addresses are not allowed",
        "attempts": 1,
        "first_attempt_at": "2026-11-23T10:00:00Z",
        "failed_at": "2026-11-23T10:00:01Z",
        "request_id": "req-1",
    }
    assert DeadLetterHeaders.from_amqp(headers) == WRITTEN


def test_unknown_request_id_is_left_out() -> None:
    headers = WRITTEN.model_copy(update={"request_id": None}).to_amqp()
    assert "request_id" not in headers
    assert DeadLetterHeaders.from_amqp(headers).request_id is None


def test_bytes_and_string_numbers_are_tolerated() -> None:
    headers = {key: str(value).encode() for key, value in WRITTEN.to_amqp().items()}
    headers["failure_detail"] = b"bad \xff byte\r\n"
    read = DeadLetterHeaders.from_amqp(headers)
    assert read.attempts == 1
    assert read.request_id == "req-1"
    assert read.failure_detail == "bad \ufffd byte"  # decoded leniently, controls dropped


def test_delivery_limit_record_from_the_broker() -> None:
    died = datetime(2026, 11, 23, 10, 5, 0)  # pika decodes AMQP timestamps as naive UTC
    headers: dict[str, object] = {
        "x-delivery-count": 6,
        "x-first-death-reason": b"delivery_limit",
        "x-first-death-queue": "email.queue",
        "x-death": [
            {"count": 1, "reason": "delivery_limit", "queue": "email.queue", "time": died},
        ],
    }
    read = DeadLetterHeaders.from_amqp(headers)
    assert read.failure_reason == "delivery_limit"
    assert "delivery_limit" in read.failure_detail and "email.queue" in read.failure_detail
    assert read.attempts == 6
    assert read.failed_at == read.first_attempt_at == "2026-11-23T10:05:00Z"
    assert read.request_id is None


def test_headerless_record_without_broker_details() -> None:
    read = DeadLetterHeaders.from_amqp({"x-death": "garbage", "attempts": -3})
    assert (read.failure_reason, read.attempts, read.failed_at) == ("delivery_limit", 0, "")
    assert "unknown" in read.failure_detail


def test_detail_is_capped() -> None:
    read = DeadLetterHeaders.from_amqp({**WRITTEN.to_amqp(), "failure_detail": "x" * 500})
    assert len(read.failure_detail) == 200
    long = "smtp_transient: " + "y" * 200 + "\r\n"  # retries_exhausted details can exceed the cap
    clipped = DeadLetterHeaders.model_validate({**WRITTEN.model_dump(), "failure_detail": long})
    assert clipped.failure_detail == long[:200]
    with pytest.raises(ValidationError):
        DeadLetterHeaders.model_validate({**WRITTEN.model_dump(), "attempts": -1})


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC), "2026-01-02T03:04:05Z"),
        (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05Z",
        ),
    ],
)
def test_rfc3339_is_utc_with_z(moment: datetime, expected: str) -> None:
    assert rfc3339(moment) == expected
