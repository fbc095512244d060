"""Postmark webhooks: Bounce, Spam Complaint and Subscription Change.

Sources (Postmark's own documentation):
- the bounce webhook (``RecordType`` ``Bounce``, ``Type``, ``TypeCode``, ``MessageID``,
  ``Email``, ``Description``, ``Details``): https://postmarkapp.com/developer/webhooks/bounce-webhook
- the bounce types (HardBounce, Transient, Unsubscribe, Subscribe, AutoResponder,
  AddressChange, DnsError, SpamNotification, OpenRelayTest, Unknown, SoftBounce,
  VirusNotification, ChallengeVerification, BadEmailAddress, SpamComplaint,
  ManuallyDeactivated, Unconfirmed, Blocked, ...):
  https://postmarkapp.com/developer/api/bounce-api#bounce-types
- the spam complaint webhook (``RecordType`` ``SpamComplaint``, ``Email``, ``MessageID``):
  https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
- the subscription change webhook (``RecordType`` ``SubscriptionChange``, ``Recipient``,
  ``SuppressSending`` true to suppress and false to reactivate, ``SuppressionReason``
  HardBounce | SpamComplaint | ManualSuppression, the last also when the recipient
  unsubscribed, with ``Origin`` ``Recipient``):
  https://postmarkapp.com/developer/webhooks/subscription-change-webhook
- authentication: HTTP basic auth in the webhook URL (no signature), checked by
  ``email_worker.webhooks.shared_secrets``: https://postmarkapp.com/email-webhooks

``MessageID`` is Postmark's id of the message (what its API answered on send). A reactivation
(``SuppressSending`` false) is not acted on: the worker's list is changed by its own CLI only,
and a manual suppression made by the account's own people (``Origin`` Customer or Admin) is
theirs, not a recipient's signal.
"""

from __future__ import annotations

from email_worker.reports.model import Kind, Malformed, Report, address, ids, json_body, text

_BOUNCE_TYPES = {
    "HardBounce": Kind.HARD_BOUNCE,
    "BadEmailAddress": Kind.HARD_BOUNCE,
    "SoftBounce": Kind.SOFT_BOUNCE,
    "Transient": Kind.SOFT_BOUNCE,
    "DnsError": Kind.SOFT_BOUNCE,
    "Blocked": Kind.SOFT_BOUNCE,  # the receiver blocked the sender, not the address
    "Unknown": Kind.SOFT_BOUNCE,
    "SpamComplaint": Kind.COMPLAINT,
    "Unsubscribe": Kind.UNSUBSCRIBE,
}
_SUPPRESSION_REASONS = {"HardBounce": Kind.HARD_BOUNCE, "SpamComplaint": Kind.COMPLAINT}


def postmark_reports(body: bytes) -> list[Report]:
    """The report in one (authenticated) webhook POST, if it is one. Raises ``Malformed`` when
    the body is not a JSON object with a ``RecordType``."""
    document = json_body(body)
    if not isinstance(document, dict) or not isinstance(document.get("RecordType"), str):
        raise Malformed("a Postmark webhook is a JSON object with a RecordType")
    record = document["RecordType"]
    if record == "Bounce":
        kind = _BOUNCE_TYPES.get(str(document.get("Type")))
        return _report(kind, document, document.get("Email"))
    if record == "SpamComplaint":
        return _report(Kind.COMPLAINT, document, document.get("Email"))
    if record == "SubscriptionChange":
        return _report(_subscription_kind(document), document, document.get("Recipient"))
    return []


def _subscription_kind(document: dict[str, object]) -> Kind | None:
    if document.get("SuppressSending") is not True:
        return None  # a reactivation
    reason = document.get("SuppressionReason")
    if reason == "ManualSuppression":
        return Kind.UNSUBSCRIBE if document.get("Origin") == "Recipient" else None
    return _SUPPRESSION_REASONS.get(str(reason))


def _report(kind: Kind | None, document: dict[str, object], recipient: object) -> list[Report]:
    found = address(recipient)
    if kind is None or found is None:
        return []
    code = text(document.get("Type") or document.get("SuppressionReason"), 30)
    detail = text(document.get("Details")) or text(document.get("Description"))
    return [Report(kind, found, code, detail, (), ids(document.get("MessageID")))]
