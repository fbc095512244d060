"""The dead-letter record's headers (CONTRACT section 8).

A message in ``failed.queue`` keeps its body and properties byte for byte; the worker adds these
headers. ``DeadLetterHeaders.to_amqp`` writes them; ``from_amqp`` reads them back for the DLQ
tools, tolerating what real brokers and older records hold: bytes instead of strings, numbers as
strings, and records the broker dead-lettered itself (quorum queue delivery limit), which carry
only ``x-death`` / ``x-first-death-*`` and no ``failure_reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.failures import MAX_DETAIL, Reason

MAX_REQUEST_ID = 128


def rfc3339(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with a ``Z`` suffix, to the second. Naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeadLetterHeaders(BaseModel):
    """Headers the worker adds to a dead-lettered message; failure_detail holds no PII."""

    # extra="ignore": the same header table also holds the publisher's and the broker's headers.
    model_config = ConfigDict(frozen=True, extra="ignore")

    failure_reason: str = Field(description="a stable reason code (schemas.failures.Reason)")
    failure_detail: str = Field(default="", max_length=MAX_DETAIL)
    attempts: int = Field(ge=0, description="attempts made before dead-lettering")
    first_attempt_at: str = Field(description="RFC 3339 UTC (Z); empty when unknown")
    failed_at: str = Field(description="RFC 3339 UTC (Z); empty when unknown")
    request_id: str | None = Field(
        default=None, max_length=MAX_REQUEST_ID, description="absent when the body had none"
    )

    @field_validator("failure_detail", mode="before")
    @classmethod
    def _clip_detail(cls, value: object) -> object:
        # A retries_exhausted detail is "<reason>: <detail>" and may exceed the cap: clip it
        # rather than fail while dead-lettering, which would turn the message into a poison one.
        if isinstance(value, str):
            return "".join(char for char in value if char.isprintable())[:MAX_DETAIL]
        return value

    def to_amqp(self) -> dict[str, object]:
        """AMQP header table entries; ``request_id`` is left out when unknown."""
        headers: dict[str, object] = {
            "failure_reason": self.failure_reason,
            "failure_detail": self.failure_detail,
            "attempts": self.attempts,
            "first_attempt_at": self.first_attempt_at,
            "failed_at": self.failed_at,
        }
        if self.request_id is not None:
            headers["request_id"] = self.request_id
        return headers

    @classmethod
    def from_amqp(cls, headers: Mapping[str, object]) -> DeadLetterHeaders:
        """Read the headers of a dead-lettered message; never raises on odd values.

        A record without ``failure_reason`` was dead-lettered by the broker (its delivery limit):
        it is reported as ``delivery_limit`` with the broker's own reason and queue as detail.
        """
        death = _latest_death(headers)
        failed_at = _text(headers.get("failed_at")) or _timestamp(death.get("time"))
        reason = _text(headers.get("failure_reason"))
        detail = _text(headers.get("failure_detail"))
        if not reason:
            reason, detail = Reason.DELIVERY_LIMIT.value, _broker_detail(headers, death)
        return cls(
            failure_reason=reason,
            failure_detail=detail,
            attempts=_attempts(headers, death),
            first_attempt_at=_text(headers.get("first_attempt_at")) or failed_at,
            failed_at=failed_at,
            request_id=_text(headers.get("request_id"))[:MAX_REQUEST_ID] or None,
        )


def _text(value: object) -> str:
    """A header value as printable text: bytes decoded leniently, control characters dropped."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return "".join(char for char in str(value) if char.isprintable()).strip()


def _int(value: object) -> int | None:
    text = _text(value)
    return int(text) if text.isdigit() and len(text) < 10 else None


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return rfc3339(datetime.fromtimestamp(value, UTC))
    return _text(value)


def _latest_death(headers: Mapping[str, object]) -> Mapping[str, Any]:
    """The newest ``x-death`` entry (RabbitMQ keeps the newest first), or an empty mapping."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def _attempts(headers: Mapping[str, object], death: Mapping[str, Any]) -> int:
    for candidate in (headers.get("attempts"), headers.get("x-delivery-count")):
        count = _int(candidate)
        if count is not None:
            return count
    return _int(death.get("count")) or 0


def _broker_detail(headers: Mapping[str, object], death: Mapping[str, Any]) -> str:
    why = _text(headers.get("x-first-death-reason")) or _text(death.get("reason")) or "unknown"
    queue = _text(headers.get("x-first-death-queue")) or _text(death.get("queue")) or "unknown"
    return f"dead-lettered by the broker: {why} in {queue}"
