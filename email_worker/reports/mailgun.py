"""Mailgun webhooks (the JSON form: a ``signature`` block and one ``event-data`` object).

Sources (Mailgun's own documentation):
- the signature block ``{"timestamp", "token", "signature"}``: HMAC-SHA256 of timestamp and
  token concatenated, hex, under the HTTP webhook signing key; cache tokens against replays and
  refuse timestamps far from now:
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
- payloads (``event-data.event``, ``recipient``, ``severity``, ``delivery-status`` with
  ``code``, ``message``, ``description``, ``message.headers.message-id`` without angle
  brackets): https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
- event types (``failed`` with ``severity`` ``permanent`` or ``temporary``, ``complained``,
  ``unsubscribed``): https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-types
- retries (a 406 answer is final: Mailgun does not retry it; other failures are retried for
  8 hours): https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries

``failed`` with ``severity`` ``permanent`` is a hard bounce, ``temporary`` a soft one;
``complained`` a complaint; ``unsubscribed`` an unsubscribe. The signature is checked by
``email_worker.webhooks.shared_secrets`` before any of this is believed.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.reports.model import (
    Kind,
    Malformed,
    Report,
    address,
    enhanced_code,
    field,
    json_body,
    message_id,
    text,
)

_PLAIN = {"complained": Kind.COMPLAINT, "unsubscribed": Kind.UNSUBSCRIBE}
MAX_TOKEN = 200


@dataclass(frozen=True)
class MailgunSignature:
    """The signature block as sent: ``timestamp`` in its decimal text (what was signed)."""

    timestamp: str
    token: str
    signature: str


@dataclass(frozen=True)
class MailgunPost:
    signature: MailgunSignature
    event: dict[str, object]


def parse_mailgun(body: bytes) -> MailgunPost:
    """The signature block and event of one webhook POST. Raises ``Malformed`` when either is
    missing or mistyped (a timestamp is a decimal number of seconds, as text or a number)."""
    document = json_body(body)
    block, event = field(document, "signature"), field(document, "event-data")
    if not isinstance(block, dict) or not isinstance(event, dict):
        raise Malformed("a Mailgun webhook has a signature block and event-data")
    timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not isinstance(timestamp, str) or not _seconds(timestamp):
        raise Malformed("the signature's timestamp is not a number of seconds")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
        raise Malformed("the signature has no token")
    if not isinstance(signature, str):
        raise Malformed("the signature block has no signature")
    return MailgunPost(MailgunSignature(timestamp, token, signature), event)


def _seconds(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 12


def mailgun_reports(event: dict[str, object]) -> list[Report]:
    """The report in one (authenticated) ``event-data``, if it is one."""
    name = event.get("event")
    if name == "failed":
        severity = event.get("severity")
        kind = Kind.HARD_BOUNCE if severity == "permanent" else Kind.SOFT_BOUNCE
    elif isinstance(name, str) and name in _PLAIN:
        kind = _PLAIN[name]
    else:
        return []
    found = address(event.get("recipient"))
    if found is None:
        return []
    status = field(event, "delivery-status")
    detail = text(field(status, "message")) or text(field(status, "description"))
    raw_code = field(status, "code")
    code = enhanced_code(detail) or (str(raw_code) if isinstance(raw_code, int) else "")
    ours = message_id(field(event, "message", "headers", "message-id"))
    # Mailgun's API answers the message's Message-ID as its id: the same value ties both ways.
    tied = (ours,) if ours else ()
    return [Report(kind, found, code or text(name, 20), detail, tied, tied)]
