"""The MIME message of an outgoing email (CONTRACT section 9).

``multipart/alternative`` with the text part then the HTML part, UTF-8, CRLF line ends, each
part 7bit as it is when it can be (ASCII without controls, lines of at most 998 octets), else
quoted-printable (``_part``), written straight to wire bytes: this fixed shape needs no
generator, and the ``email`` package's header parsing and generator cost about half of the
worker's CPU per email in profiles; our own header check makes that parsing redundant. Its
generator would also write a long ``List-Unsubscribe`` URL as encoded words, which no client
reads as a URL. Messages with a non-ASCII address (SMTPUTF8) get UTF-8 headers (RFC 6532), the
others ASCII headers.

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
import time
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
        f"Date: {_date()}",
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


_DATES: dict[int, str] = {}  # the Date of the current second (a second's emails share it)


def _date() -> str:
    """Now, as RFC 5322 writes a date (UTC); formatting it cost more than the other headers
    together, so it is made once a second."""
    second = int(time.time())
    date = _DATES.get(second)
    if date is None:
        date = format_datetime(datetime.fromtimestamp(second, UTC))
        _DATES.clear()  # threads may race here: each then writes the same value
        _DATES[second] = date
    return date


def _display_names(outgoing: OutgoingEmail) -> dict[str, str]:
    """The display names of ``From`` and ``Reply-To`` (from configuration, never from a
    template), each checked like any header value."""
    reply_to = outgoing.reply_to
    given = {"From": outgoing.sender_name, "Reply-To": reply_to.name if reply_to else None}
    return {name: check_header_value(name, value) for name, value in given.items() if value}


def _part(boundary: str, subtype: str, text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    data = normalised.encode("ascii") if normalised.isascii() else None
    if data is not None and not data.translate(None, _PLAIN):  # printable ASCII, tab, LF
        if max(map(len, data.split(b"\n"))) <= MAX_LINE:
            # RFC 2045 7bit data as it is: ASCII, no NUL or other control, lines of at most
            # 998 octets. Nothing to encode, and nothing that relies on 8BITMIME.
            encoding, body = "7bit", data.replace(b"\n", b"\r\n")
        else:  # a long line: templates often render the whole HTML as one
            encoding, body = "quoted-printable", _quoted_printable(data)
    else:  # quoted-printable keeps the body 7-bit and its lines short
        encoding = "quoted-printable"
        body = binascii.b2a_qp(normalised.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    head = (
        f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body + b"\r\n"


MAX_LINE = 998  # octets between two CRLF (RFC 5322 section 2.1.1, RFC 2045 section 2.7)
_QP_LINE = 76  # RFC 2045 section 6.7: encoded lines of at most 76 characters
_PLAIN = bytes(range(32, 127)) + b"\t\n"  # what the fast paths take (deleted: none left)


def _quoted_printable(data: bytes) -> bytes:
    """``data`` (printable ASCII, tabs and LF line ends) quoted-printable with CRLF line ends:
    what ``binascii.b2a_qp`` makes of it, up to where the soft line breaks fall, at a
    fraction of its cost (it examines every byte; here ``bytes`` methods and one regular
    expression do the bulk). Only "=" and a space or tab ending a line need encoding; a line
    longer than 76 characters is cut into pieces of at most 75 and soft breaks ("=")."""
    lines = []
    for source in data.replace(b"=", b"=3D").split(b"\n"):
        line = source
        if line[-1:] == b" " or line[-1:] == b"\t":  # would be lost at the end of a line
            line = line[:-1] + (b"=20" if line[-1:] == b" " else b"=09")
        if len(line) > _QP_LINE:
            line = b"=\r\n".join(_QP_PIECE.findall(line))
        lines.append(line)
    return b"\r\n".join(lines)


# At most 75 characters, not ending inside an "=XX" (every "=" starts one, and no "=XX"
# holds another "="): it backs off at most two characters, and the piece holding a single
# character or a whole "=XX" always matches, so the pieces are the whole line, in order.
_QP_PIECE = re.compile(rb".{1,75}(?<!=)(?<!=.)", re.S)


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
