"""The normalised internal request: one shape, whatever envelope or field names the gateway used.

``schemas.inbound.parse_message`` is the only producer. Everything downstream of validation works
on ``EmailRequest`` and never looks at the raw body again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EmailRequest(BaseModel):
    """A validated email request. Guarantees: ids are printable and bounded, ``template_code``
    matches the contract pattern, ``recipient`` (when set) is one validated mailbox with no
    display name, and at least one of ``recipient`` / ``user_id`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    notification_id: str = Field(description="echoed in callbacks; request_id when absent")
    correlation_id: str = Field(description="carried into logs and callbacks")
    template_code: str
    recipient: str | None = None
    user_id: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    language: str | None = None
    priority: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    batch_id: str | None = None
    callback_url: str | None = Field(
        default=None, description="honoured only when its host is on the operator's allow-list"
    )
    payload_hash: str = Field(description="sha256 of the canonical request; conflicts compare it")
    # CONTRACT section 14: timezone-aware (UTC) when set; the parser refuses anything else.
    send_at: datetime | None = Field(default=None, description="not sent before this time")
    expires_at: datetime | None = Field(default=None, description="not sent after this time")
