"""The status callback POSTed to the gateway (CONTRACT section 7)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class CallbackStatus(StrEnum):
    """What the gateway is told. ``delivered`` is final; ``failed`` is final unless an SRE
    replays the message; ``pending`` means a retry is scheduled."""

    DELIVERED = "delivered"
    PENDING = "pending"
    FAILED = "failed"


class StatusCallback(BaseModel):
    """The callback body. Carries no recipient address and no email content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notification_id: str = Field(description="the message's notification_id, else request_id")
    status: CallbackStatus
    timestamp: str = Field(description="UTC, RFC 3339 with a Z suffix, when the status was set")
    error: str | None = Field(
        default=None, description="null when delivered; else '<reason_code>: <short detail>'"
    )
    request_id: str = Field(description="extension: the idempotency key")
    correlation_id: str = Field(description="extension: the correlation id, else request_id")
