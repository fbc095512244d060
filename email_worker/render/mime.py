"""The MIME message of an outgoing email (CONTRACT section 9).

``multipart/alternative`` with the text part then the HTML part, UTF-8, quoted-printable, CRLF
line ends, written straight to wire bytes: this fixed shape needs no generator, and the
``email`` package's header parsing and generator cost about half of the worker's CPU per email
in profiles; our own header check makes that parsing redundant. Its generator would also write
a long ``List-Unsubscribe`` URL as encoded words, which no client reads as a URL. Messages with
a non-ASCII address (SMTPUTF8) get UTF-8 headers (RFC 6532), the others ASCII headers.

Headers: ``From`` (the configured sender, its display name quoted or RFC 2047 encoded),
``Reply-To`` when configured, ``To`` (the one validated recipient), ``Subject``, ``Message-ID``,
``Date`` (UTC), ``MIME-Version`` and, when the template gives one, ``List-Unsubscribe``. A
template gives only the subject, the bodies and ``List-Unsubscribe``: no template field can set
``From``, ``Sender``, ``To``, ``Cc`` or ``Bcc`` (CONTRACT section 11). Every value is checked
by ``email_worker.render.headers`` (CVE-2024-6923) and folded within RFC 5322's line limits on
every path (``header_line``, ``mailbox_line``).
``List-Unsubscribe-Post`` (RFC 8058 one-click) is added only beside the worker's own one-click
URL (``UNSUBSCRIBE_URL``, email_worker/suppression/policy.py), never beside a template's: it
promises that a bare POST to the URL unsubscribes, which only the template's owner can know.
"""

from __future__ import annotations

import binascii
import email.errors
import email.policy
import re
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from email_worker.ports import OutgoingEmail
from email_worker.render.headers import check_header_value, header_line, mailbox_line
from schemas.failures import PermanentFailure, Reason


def _headers(outgoing: OutgoingEmail) -> dict[str, str]:
    content = outgoing.content
    headers = {"From": outgoing.sender}
    if outgoing.reply_to is not None:
        headers["Reply-To"] = outgoing.reply_to.address
    headers |= {
        "To": outgoing.recipient,
        "Subject": content.subject,
        "Message-ID": outgoing.message_id,
    }
    if content.list_unsubscribe:
        headers["List-Unsubscribe"] = content.list_unsubscribe
        if content.list_unsubscribe_post:  # only beside the worker's own one-click URL
            headers["List-Unsubscribe-Post"] = content.list_unsubscribe_post
    return headers


# local@domain with nothing a header parser reads as structure (lists, groups, display names,
# quoting, comments, whitespace). Stricter than parsing: validated recipients always pass.
_ONE_ADDRESS = re.compile(r'[^\s,;:<>()"\\@]+@[^\s,;:<>()"\\@]+')


def is_bare_address(value: str) -> bool:
    """True for a plain ``local@domain`` that needs no parsing (no display name, list,
    quoting, comment or whitespace)."""
    return _ONE_ADDRESS.fullmatch(value) is not None


def build_message(outgoing: OutgoingEmail) -> bytes:
    """The message as wire bytes, every header checked and folded within RFC 5322's line limits
    (998 octets always, 78 where the words allow). Headers are ASCII, with encoded words for
    non-ASCII text, unless an address is non-ASCII: then the message is RFC 6532 (SMTPUTF8) and
    the headers are UTF-8. Raises ``PermanentFailure(UNSAFE_CONTENT)`` for an unsafe or
    unusable header value (one that cannot be folded, a ``To`` that is not one address)."""
    headers = _headers(outgoing)
    for name, value in headers.items():
        check_header_value(name, value)
    names = _display_names(outgoing)
    # A header parser would read "a@x, b@y" as two visible recipients: one bare address only.
    for name in ("To", "Reply-To", *names):
        if name in headers and not is_bare_address(headers[name]):
            raise PermanentFailure(Reason.UNSAFE_CONTENT, f"header {name}: not exactly one address")
    utf8 = not (outgoing.sender + outgoing.recipient).isascii()
    lines = [
        mailbox_line(name, names[name], value)
        if name in names
        else header_line(name, value, utf8=utf8, words=name != "Subject")
        for name, value in headers.items()
    ]
    # "=_" cannot occur in a quoted-printable body (it would be "=3D_"): a safe boundary.
    boundary = f"=_{secrets.token_hex(16)}"
    lines += [
        f"Date: {format_datetime(datetime.now(UTC))}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"',
    ]
    head = "\r\n".join(lines).encode("utf-8" if utf8 else "ascii")
    return b"".join(
        [
            head,
            b"\r\n\r\n",
            _part(boundary, "plain", outgoing.content.text),
            _part(boundary, "html", outgoing.content.html),
            f"--{boundary}--\r\n".encode("ascii"),
        ]
    )


def _display_names(outgoing: OutgoingEmail) -> dict[str, str]:
    """The display names of ``From`` and ``Reply-To`` (from configuration, never from a
    template), each checked like any header value."""
    reply_to = outgoing.reply_to
    given = {"From": outgoing.sender_name, "Reply-To": reply_to.name if reply_to else None}
    return {name: check_header_value(name, value) for name, value in given.items() if value}


def _part(boundary: str, subtype: str, text: str) -> bytes:
    # Quoted-printable keeps the body 7-bit (no reliance on 8BITMIME) and its lines short.
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    body = binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")
    head = (
        f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + body + b"\r\n"


def serialize(message: bytes | EmailMessage, *, utf8: bool) -> bytes:
    """Wire bytes, CRLF-terminated lines. ``build_message`` gives them already (whether its
    headers are UTF-8 was decided from the same addresses that decide ``utf8``); an
    ``EmailMessage`` built elsewhere is generated with ``utf8`` (RFC 6531)."""
    if isinstance(message, bytes):
        return message
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    try:
        return message.as_bytes(policy=policy)
    except (ValueError, email.errors.MessageError) as exc:
        raise PermanentFailure(
            Reason.UNSAFE_CONTENT, f"cannot encode message: {type(exc).__name__}"
        ) from None
