"""Twilio SendGrid Event Webhook batches.

Sources (SendGrid's own documentation):
- events and their fields (a JSON array of event objects; ``email``, ``event``, ``timestamp``,
  ``smtp-id``, ``sg_message_id``, ``sg_event_id``; ``bounce`` with ``type`` ``bounce`` or
  ``blocked``, ``status`` and ``reason``; ``dropped`` with ``reason``; ``spamreport``;
  ``unsubscribe`` and ``group_unsubscribe``):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
- the signature (ECDSA over the ``X-Twilio-Email-Event-Webhook-Timestamp`` value followed by
  the raw body, checked in ``email_worker.webhooks.signatures``):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
- ``sg_message_id`` begins with the ``X-Message-Id`` the Mail Send API answered (SendGrid
  filters events with ``msg_id LIKE '<X-Message-ID>%'``):
  https://support.sendgrid.com/hc/en-us/articles/35804743679259 and
  https://www.twilio.com/docs/sendgrid/glossary/x-message-id

Mapping: ``bounce`` of type ``bounce`` is a hard bounce, of type ``blocked`` (the receiver
refused the sender, not the address) a soft one; ``dropped`` for a ``Bounced Address`` or an
``Invalid`` one is a hard bounce, for an ``Unsubscribed Address`` an unsubscribe, for a
``Spam Reporting Address`` a complaint, anything else soft; ``spamreport`` a complaint;
``unsubscribe`` and ``group_unsubscribe`` unsubscribes. Other events are not reports.
"""

from __future__ import annotations

from email_worker.reports.model import (
    Kind,
    Malformed,
    Report,
    address,
    enhanced_code,
    ids,
    json_body,
    message_id,
    text,
)

MAX_EVENTS = 5000
_DROPPED = {
    "bounced address": Kind.HARD_BOUNCE,
    "invalid": Kind.HARD_BOUNCE,
    "unsubscribed address": Kind.UNSUBSCRIBE,
    "spam reporting address": Kind.COMPLAINT,
}
_PLAIN = {
    "spamreport": Kind.COMPLAINT,
    "unsubscribe": Kind.UNSUBSCRIBE,
    "group_unsubscribe": Kind.UNSUBSCRIBE,
}


def sendgrid_reports(body: bytes) -> list[Report]:
    """The reports in one Event Webhook POST. Raises ``Malformed`` when the body is not a JSON
    array of objects (no more than ``MAX_EVENTS``); events without a usable address are left
    out."""
    document = json_body(body)
    if not isinstance(document, list) or len(document) > MAX_EVENTS:
        raise Malformed("an Event Webhook body is a JSON array of events")
    reports = []
    for event in document:
        if not isinstance(event, dict):
            raise Malformed("every event of the batch is a JSON object")
        report = _report(event)
        if report is not None:
            reports.append(report)
    return reports


def _kind(event: dict[str, object]) -> Kind | None:
    name = event.get("event")
    if name == "bounce":
        return Kind.SOFT_BOUNCE if event.get("type") == "blocked" else Kind.HARD_BOUNCE
    if name == "dropped":
        reason = event.get("reason")
        return _DROPPED.get(reason.lower(), Kind.SOFT_BOUNCE) if isinstance(reason, str) else None
    return _PLAIN.get(name) if isinstance(name, str) else None


def _report(event: dict[str, object]) -> Report | None:
    kind = _kind(event)
    found = address(event.get("email"))
    if kind is None or found is None:
        return None
    status = event.get("status")
    code = enhanced_code(status) or text(event.get("type") or event.get("event"), 30)
    provider_id = event.get("sg_message_id")
    x_message_id = provider_id.split(".", 1)[0] if isinstance(provider_id, str) else None
    ours = message_id(event.get("smtp-id"))
    return Report(
        kind,
        found,
        code,
        text(event.get("reason")),
        (ours,) if ours else (),
        ids(provider_id, x_message_id),
    )
