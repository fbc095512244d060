"""Mailgun, Postmark and raw RFC 3464 / RFC 5965 reports as they really arrive (the SNS and
SendGrid ones, and ``Signed`` / ``post``, are in ``tests.support.webhooks``): each body copies
the structure of the provider's own example (URLs in each builder's docstring) and is
authenticated exactly as its provider does it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from tests.support.webhooks import Signed

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
