"""The status callback POSTed to the gateway (CONTRACT section 7).

``StatusCallback`` is the default body. An operator reshapes it for one gateway with
``CALLBACK_FIELD_NAMES`` (rename or drop fields, add the opt-in ``attempts``) and
``CALLBACK_EXTRA_FIELDS`` (constant fields merged in); the exported JSON Schema describes the
default shape."""

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
    """The callback body. Carries no recipient address and no email content. ``attempts`` is
    absent from the default body: naming it in CALLBACK_FIELD_NAMES (``attempts:attempts``)
    adds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notification_id: str = Field(description="the message's notification_id, else request_id")
    status: CallbackStatus
    timestamp: str = Field(description="UTC, RFC 3339 with a Z suffix, when the status was set")
    error: str | None = Field(
        default=None, description="null when delivered; else '<reason_code>: <short detail>'"
    )
    request_id: str = Field(
        description=(
            "extension: the idempotency key; for a message refused as invalid that has none,"
            " the id the callback is for (its notification_id, correlation_id or message_id)"
        )
    )
    correlation_id: str = Field(description="extension: the correlation id, else request_id")
    attempts: int | None = Field(
        default=None,
        ge=0,
        description=(
            "opt-in (CALLBACK_FIELD_NAMES): the request's attempts as the ledger counted them"
            " when the status was recorded; absent from the default body"
        ),
    )
