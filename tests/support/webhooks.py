"""Providers' bounce and complaint webhooks as they really arrive, signed with keys and
certificates the tests generate: each body copies the structure of the provider's own example
(the URLs are in each builder's docstring), and each is signed exactly as its provider signs.

``Signed(path, headers, body)`` is one POST; ``post(port, signed)`` sends it to a worker.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
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


# --- Mailgun ------------------------------------------------------------------------------


def mailgun_post(key: str, event_data: dict[str, Any], timestamp: int, token: str = "") -> Signed:
    """A webhook POST with its signature block
    (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks)."""
    token = token or secrets.token_hex(25)  # "randomly generated string with length of 50"
    stamp = str(timestamp)
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    body = {
        "signature": {"token": token, "timestamp": stamp, "signature": digest},
        "event-data": event_data,
    }
    return Signed(
        "/webhooks/mailgun", {"Content-Type": "application/json"}, json.dumps(body).encode()
    )


def mailgun_failed(address: str, message_id: str, severity: str = "permanent") -> dict[str, Any]:
    """A ``failed`` event as
    https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads shows
    it (the Message-ID without angle brackets)."""
    return {
        "event": "failed",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1521233195.375624,
        "log-level": "error",
        "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "recipient": address,
        "recipient-domain": address.rpartition("@")[2],
        "delivery-status": {
            "attempt-no": 1,
            "message": "5.1.1 The email account that you tried to reach does not exist",
            "code": 550 if severity == "permanent" else 452,
            "description": "",
        },
        "message": {
            "headers": {
                "to": address,
                "message-id": message_id.strip("<>"),
                "from": "notifications@acme.test",
                "subject": "Hello",
            },
            "attachments": [],
            "size": 111,
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        "envelope": {"sender": "bounce@acme.test", "transport": "smtp", "targets": address},
        "tags": [],
        "user-variables": {},
    }


# --- Postmark -----------------------------------------------------------------------------


def postmark_bounce(address: str, kind: str = "HardBounce", type_code: int = 1) -> dict[str, Any]:
    """The bounce webhook's JSON (https://postmarkapp.com/developer/webhooks/bounce-webhook)."""
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": type_code,
        "Name": "Hard bounce",
        "Tag": "Test",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"a_key": "a_value"},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "Test bounce details",
        "Email": address,
        "From": "notifications@acme.test",
        "BouncedAt": "2026-05-25T13:28:10.2735393-04:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Test subject",
        "Content": "<Full dump of bounce>",
    }


def postmark_post(document: dict[str, Any], username: str, password: str) -> Signed:
    """Basic auth from the credentials in the webhook's URL."""
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {credentials}"}
    return Signed("/webhooks/postmark", headers, json.dumps(document).encode())


# --- RFC 3464 / RFC 5965 ------------------------------------------------------------------


def dsn(address: str, message_id: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A Postfix-style RFC 3464 bounce with the original headers (RFC 6522 layout)."""
    return f"""From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: bounces@acme.test
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="8A1C4E8E0.1716649178/mx.example.org"

--8A1C4E8E0.1716649178/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--8A1C4E8E0.1716649178/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 8A1C4E8E0
Arrival-Date: Sat, 25 May 2026 16:59:38 +0200 (CEST)

Final-Recipient: rfc822; {address}
Original-Recipient: rfc822;{address}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; 550 {status} <{address}>: Recipient address rejected

--8A1C4E8E0.1716649178/mx.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: notifications@acme.test
To: {address}
Subject: Hello
Message-ID: {message_id}

--8A1C4E8E0.1716649178/mx.example.org--
""".replace("\n", "\r\n").encode()


def arf(message_id: str, recipient: str | None = None, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 feedback report (its section 3 example), recipient redacted unless given."""
    rcpt = f"Original-Rcpt-To: <{recipient}>\r\n" if recipient else ""
    return (
        "From: <abusedesk@example.com>\r\nDate: Thu, 8 Mar 2026 14:00:00 EDT\r\n"
        "Subject: FW: Hello\r\nTo: <abuse@acme.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report;\r\n\tboundary="part1"\r\n'
        '\r\n--part1\r\nContent-Type: text/plain; charset="US-ASCII"\r\n'
        "Content-Transfer-Encoding: 7bit\r\n\r\nThis is an email abuse report.\r\n\r\n"
        "--part1\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <bounces@acme.test>\r\n{rcpt}"
        "Arrival-Date: Thu, 8 Mar 2026 14:00:00 EDT\r\nSource-IP: 192.0.2.1\r\n\r\n"
        "--part1\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        f"From: <notifications@acme.test>\r\nSubject: Hello\r\nMessage-ID: {message_id}\r\n"
        "Date: Thu, 8 Mar 2026 13:00:00 EDT\r\n\r\nBody\r\n--part1--\r\n"
    ).encode()


def dsn_post(raw: bytes, token: str) -> Signed:
    headers = {"Content-Type": "message/rfc822", "Authorization": f"Bearer {token}"}
    return Signed("/webhooks/dsn", headers, raw)
