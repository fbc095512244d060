"""The MIME message of an outgoing email (CONTRACT section 9).

``multipart/alternative`` with the text part then the HTML part, UTF-8, built with
``email.message.EmailMessage`` under ``email.policy.SMTP`` (CRLF line ends, folded and encoded
headers). Headers: ``From`` (the configured sender), ``To`` (the one validated recipient),
``Subject``, ``Message-ID``, ``Date`` (UTC), ``MIME-Version`` and, when the template gives one,
``List-Unsubscribe``. Every value is checked by ``email_worker.headers`` *before* the ``email``
package sees it (CVE-2024-6923). ``List-Unsubscribe-Post`` (RFC 8058 one-click) is deliberately
not added: it promises that a bare POST to the URL unsubscribes, which only the template's owner
can know.
"""

from __future__ import annotations

import email.errors
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from email_worker.headers import check_header_value
from email_worker.ports import OutgoingEmail
from schemas.failures import PermanentFailure, Reason


def _headers(outgoing: OutgoingEmail) -> dict[str, str]:
    content = outgoing.content
    headers = {
        "From": outgoing.sender,
        "To": outgoing.recipient,
        "Subject": content.subject,
        "Message-ID": outgoing.message_id,
    }
    if content.list_unsubscribe:
        headers["List-Unsubscribe"] = content.list_unsubscribe
    return headers


def build_message(outgoing: OutgoingEmail) -> EmailMessage:
    """The message, every header checked. Raises ``PermanentFailure(UNSAFE_CONTENT)`` for an
    unsafe or unusable header value, or content that cannot be encoded."""
    headers = _headers(outgoing)
    for name, value in headers.items():
        check_header_value(name, value)
    message = EmailMessage(policy=email.policy.SMTP)
    try:
        for name, value in headers.items():
            message[name] = value
        message["Date"] = format_datetime(datetime.now(UTC))
        # Quoted-printable keeps the body 7-bit: no reliance on the relay's 8BITMIME.
        message.set_content(
            outgoing.content.text, subtype="plain", charset="utf-8", cte="quoted-printable"
        )
        message.add_alternative(
            outgoing.content.html, subtype="html", charset="utf-8", cte="quoted-printable"
        )
    except (ValueError, TypeError, email.errors.MessageError) as exc:
        raise PermanentFailure(
            Reason.UNSAFE_CONTENT, f"cannot build message: {type(exc).__name__}"
        ) from None
    # The header parser would turn "a@x, b@y" into two visible recipients: one only.
    if len(getattr(message["To"], "addresses", ())) != 1:
        raise PermanentFailure(Reason.UNSAFE_CONTENT, "header To: not exactly one address")
    return message


def serialize(message: EmailMessage, *, utf8: bool) -> bytes:
    """Wire bytes, CRLF-terminated lines; ``utf8`` (RFC 6531) leaves non-ASCII addresses raw."""
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    try:
        return message.as_bytes(policy=policy)
    except (ValueError, email.errors.MessageError) as exc:
        raise PermanentFailure(
            Reason.UNSAFE_CONTENT, f"cannot encode message: {type(exc).__name__}"
        ) from None
