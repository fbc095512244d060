"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS over HTTP(S).

Sources (the providers' own documentation; nothing here is guessed):
- SNS message JSON (Notification, SubscriptionConfirmation, UnsubscribeConfirmation):
  https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html and
  https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html
- the string SNS signs: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html
  ("name, newline, value, newline" for each pair, in byte-sort order; Notification: Message,
  MessageId, Subject if included, Timestamp, TopicArn, Type; the confirmations: Message,
  MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type);
- SES notification contents (``notificationType`` or, with event publishing, ``eventType``;
  ``bounce.bounceType`` Undetermined | Permanent | Transient, ``bouncedRecipients[]`` with
  ``emailAddress``, ``status``, ``diagnosticCode``; ``complaint.complainedRecipients[]``,
  ``complaintFeedbackType``; ``mail.messageId`` is SES's id, our own Message-ID is in
  ``mail.commonHeaders.messageId`` and ``mail.headers``):
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html

This module only parses; the signature is checked by ``email_worker.webhooks.signatures``
over ``string_to_sign``. ``Permanent`` is a hard bounce; ``Transient`` and ``Undetermined``
are soft (counted, never suppressed).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from email_worker.reports.model import (
    Kind,
    Malformed,
    Report,
    address,
    enhanced_code,
    field,
    ids,
    json_body,
    message_id,
    text,
)

NOTIFICATION = "Notification"
CONFIRMATIONS = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    **{
        kind: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        for kind in CONFIRMATIONS
    },
}
_OPTIONAL = frozenset({"Subject"})
MAX_RECIPIENTS = 100  # one SES notification names at most the recipients of one message


@dataclass(frozen=True)
class SnsMessage:
    """The fields of an SNS HTTP message that matter here (all strings, as SNS sends them)."""

    type: str
    fields: dict[str, str]
    signature: str
    signature_version: str
    signing_cert_url: str | None = None  # what the message claims: never fetched, only shown

    @property
    def topic_arn(self) -> str:
        return self.fields["TopicArn"]


def parse_sns(body: bytes) -> SnsMessage:
    """The SNS message in ``body``. Raises ``Malformed`` when it is not one (not JSON, an
    unknown ``Type``, a signed field missing or not a string, no signature)."""
    document = json_body(body)
    if not isinstance(document, dict):
        raise Malformed("an SNS message is a JSON object")
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in _SIGNED:
        raise Malformed("an SNS message has Type Notification or a subscription confirmation")
    fields: dict[str, str] = {}
    for name in _SIGNED[kind]:
        value = document.get(name)
        if value is None and name in _OPTIONAL:
            continue
        if not isinstance(value, str):
            raise Malformed(f"the SNS field {name} is missing or not a string")
        fields[name] = value
    signature, version = document.get("Signature"), document.get("SignatureVersion")
    if not isinstance(signature, str) or not isinstance(version, str):
        raise Malformed("the SNS message carries no Signature and SignatureVersion")
    url = document.get("SigningCertURL")
    return SnsMessage(kind, fields, signature, version, url if isinstance(url, str) else None)


def sns_certificate_url(url: str | None) -> str | None:
    """``url`` when it is an HTTPS URL of an SNS host (``sns.<region>.amazonaws.com``, or
    ``.amazonaws.com.cn``) naming a ``.pem`` file, else None: shown to the operator, never
    fetched."""
    if not url or len(url) > 300:
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # "https://[" and the like
        return None
    official = host.startswith("sns.") and host.endswith((".amazonaws.com", ".amazonaws.com.cn"))
    if parts.scheme != "https" or not official or not parts.path.endswith(".pem"):
        return None
    return url


def string_to_sign(message: SnsMessage) -> bytes:
    """What SNS signed: each signed pair as ``name\\nvalue\\n``, in the documented order."""
    lines = []
    for name in _SIGNED[message.type]:
        if name in message.fields:
            lines.append(f"{name}\n{message.fields[name]}\n")
    return "".join(lines).encode("utf-8")


def ses_reports(notification: str) -> list[Report]:
    """The reports in the ``Message`` of an SNS Notification: one per bounced or complained
    recipient. Other SES notification types (Delivery, Send, Open, ...) give none. Raises
    ``Malformed`` when the message is not an SES notification."""
    document = json_body(notification.encode("utf-8"))
    if not isinstance(document, dict):
        raise Malformed("an SES notification is a JSON object")
    kind = document.get("notificationType", document.get("eventType"))
    if not isinstance(kind, str) or not isinstance(document.get("mail"), dict):
        raise Malformed("an SES notification has a notificationType and a mail object")
    mail = document["mail"]
    ours = _our_message_ids(mail)
    theirs = ids(mail.get("messageId"))
    if kind == "Bounce":
        return _bounces(document.get("bounce"), ours, theirs)
    if kind == "Complaint":
        return _complaints(document.get("complaint"), ours, theirs)
    return []


def _our_message_ids(mail: dict[str, object]) -> tuple[str, ...]:
    found = [message_id(field(mail, "commonHeaders", "messageId"))]
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers[:200]:
            name = field(header, "name")
            if isinstance(name, str) and name.lower() == "message-id":
                found.append(message_id(field(header, "value")))
    return tuple(dict.fromkeys(value for value in found if value))


def _recipients(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        raise Malformed("the notification lists no recipients")
    return [item for item in value[:MAX_RECIPIENTS] if isinstance(item, dict)]


def _bounces(bounce: object, ours: tuple[str, ...], theirs: tuple[str, ...]) -> list[Report]:
    if not isinstance(bounce, dict):
        raise Malformed("a Bounce notification has a bounce object")
    kind = Kind.HARD_BOUNCE if bounce.get("bounceType") == "Permanent" else Kind.SOFT_BOUNCE
    subtype = text(bounce.get("bounceSubType"), 40)
    reports = []
    for recipient in _recipients(bounce.get("bouncedRecipients")):
        found = address(recipient.get("emailAddress"))
        if found is None:
            continue
        status = recipient.get("status")
        code = enhanced_code(status) or text(bounce.get("bounceType"), 20)
        detail = text(recipient.get("diagnosticCode")) or subtype
        reports.append(Report(kind, found, code, detail, ours, theirs))
    return reports


def _complaints(complaint: object, ours: tuple[str, ...], theirs: tuple[str, ...]) -> list[Report]:
    if not isinstance(complaint, dict):
        raise Malformed("a Complaint notification has a complaint object")
    code = text(complaint.get("complaintFeedbackType"), 40) or "complaint"
    detail = text(complaint.get("complaintSubType"), 60)
    reports = []
    for recipient in _recipients(complaint.get("complainedRecipients")):
        found = address(recipient.get("emailAddress"))
        if found is not None:
            reports.append(Report(Kind.COMPLAINT, found, code, detail, ours, theirs))
    return reports
