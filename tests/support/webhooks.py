"""Providers' bounce and complaint webhooks as they really arrive, signed with keys and
certificates the tests generate: each body copies the structure of the provider's own example
(the URLs are in each builder's docstring), and each is signed exactly as its provider signs.

``Signed(path, headers, body)`` is one POST; ``post(port, signed)`` sends it to a worker. The
Mailgun, Postmark and raw-mail builders are in ``tests.support.webhook_payloads``.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:us-east-2:123456789012:ses-bounces"
CERT_URL = "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-0000.pem"
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


@dataclass(frozen=True)
class Signed:
    path: str
    headers: dict[str, str]
    body: bytes

    def with_body(self, body: bytes) -> Signed:
        return replace(self, body=body)

    def with_header(self, name: str, value: str) -> Signed:
        return replace(self, headers={**self.headers, name: value})


def post(port: int, signed: Signed) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{signed.path}", data=signed.body, method="POST"
    )
    for name, value in signed.headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:  # an unread, unclosed error keeps its socket open
            return error.code, json.loads(error.read() or b"{}")


# --- Amazon SNS / SES ---------------------------------------------------------------------


@dataclass
class SnsSigner:
    """An RSA key and a self-signed certificate standing in for SNS's signing certificate."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def certificate_pem(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, str], version: str = "1") -> dict[str, str]:
        """``message`` with ``SignatureVersion`` and ``Signature`` as SNS computes them: the
        documented name/value lines, RSA PKCS#1 v1.5 with SHA-1 (1) or SHA-256 (2)."""
        lines = "".join(
            f"{name}\n{message[name]}\n" for name in SNS_SIGNED[message["Type"]] if name in message
        )
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(lines.encode(), padding.PKCS1v15(), algorithm)
        return message | {
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": CERT_URL,
        }


def ses_bounce(
    address: str, message_id: str, *, bounce_type: str = "Permanent", status: str = "5.1.1"
) -> dict[str, Any]:
    """An SES ``Bounce`` notification, shaped as
    https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html shows it (with the
    original headers included)."""
    recipient = {"emailAddress": address, "action": "failed", "status": status}
    recipient["diagnosticCode"] = f"smtp; 550 {status} <{address}>: user unknown"
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [recipient],
            "timestamp": "2026-05-25T14:59:38.605Z",
            "feedbackId": "000001378603176d-5a4b5ad9-6f30-4198-a8c3-b1eb0c270a1d-000000",
            "remoteMtaIp": "127.0.2.0",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        "mail": _ses_mail(address, message_id),
    }


def ses_complaint(address: str, message_id: str) -> dict[str, Any]:
    """An SES ``Complaint`` notification (same page as ``ses_bounce``)."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-05-25T04:24:21.000-05:00",
            "timestamp": "2026-05-25T14:59:38.623Z",
            "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
        },
        "mail": _ses_mail(address, message_id),
    }


def _ses_mail(address: str, message_id: str) -> dict[str, Any]:
    return {
        "timestamp": "2026-05-25T14:05:45 +0000",
        "messageId": "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
        "source": "notifications@acme.test",
        "sourceArn": "arn:aws:ses:us-east-2:123456789012:identity/acme.test",
        "sourceIp": "127.0.3.0",
        "sendingAccountId": "123456789012",
        "destination": [address],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "notifications@acme.test"},
            {"name": "To", "value": address},
            {"name": "Message-ID", "value": message_id},
            {"name": "Subject", "value": "Hello"},
        ],
        "commonHeaders": {
            "from": ["notifications@acme.test"],
            "to": [address],
            "messageId": f" {message_id}",  # the docs' example has the leading space
            "subject": "Hello",
        },
    }


def sns_notification(signer: SnsSigner, ses: dict[str, Any], version: str = "1") -> Signed:
    """An SNS HTTP ``Notification`` carrying ``ses`` in ``Message``, with the headers SNS
    sends (https://docs.aws.amazon.com/sns/latest/dg/http-header.html)."""
    message_id = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
    message = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(ses),
        "Timestamp": "2026-05-25T14:59:39.001Z",
        "UnsubscribeURL": f"https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:c9135db0",
    }
    return _sns_post(signer.sign(message, version), message_id)


def sns_confirmation(signer: SnsSigner) -> Signed:
    """An SNS ``SubscriptionConfirmation``
    (https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html)."""
    token = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3"
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the"
        " subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"
        f"&TopicArn={TOPIC}&Token={token}",
        "Timestamp": "2026-05-25T14:59:39.001Z",
    }
    return _sns_post(signer.sign(message), message["MessageId"])


def _sns_post(message: dict[str, str], message_id: str) -> Signed:
    headers = {
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message_id,
        "x-amz-sns-topic-arn": TOPIC,
        "Content-Type": "text/plain; charset=UTF-8",
        "User-Agent": "Amazon Simple Notification Service Agent",
    }
    return Signed("/webhooks/ses", headers, json.dumps(message, indent=2).encode())


# --- SendGrid -----------------------------------------------------------------------------


@dataclass
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def public_key(self) -> str:
        """As SendGrid's settings show it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def post(self, events: list[dict[str, Any]], timestamp: int) -> Signed:
        """The Signed Event Webhook POST: ECDSA P-256/SHA-256 over timestamp + body
        (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features)."""
        body = json.dumps(events).encode()
        stamp = str(timestamp)
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        return Signed("/webhooks/sendgrid", headers, body)


def sendgrid_event(event: str, address: str, message_id: str, **fields: Any) -> dict[str, Any]:
    """One event as https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
    shows it."""
    return {
        "email": address,
        "timestamp": 1513299569,
        "smtp-id": message_id,
        "event": event,
        "category": "cat facts",
        "sg_event_id": "sg_event_id_" + secrets.token_hex(4),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    } | fields
