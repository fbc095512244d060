"""The outgoing MIME message: ``email_worker.render.mime.build_message`` against the standard
library's ``email.message.EmailMessage`` with ``email.policy.SMTP`` and ``as_bytes()``, for the
same sender, recipient, subject, Message-ID, ``List-Unsubscribe``, text and HTML.

Both sides run the worker's own header checks (``check_header_value`` on every value and the
one-bare-address rule for ``To``): a replacement would keep them, since the ``email`` package
does not refuse injection on every 3.11 build (CVE-2024-6923). Both write
``multipart/alternative`` with quoted-printable UTF-8 parts. Equivalence: both outputs, parsed
back with ``email.policy.default``, have the same header values (folding whitespace aside), the
same parts in the same order and the same decoded bodies (line ends and a final newline aside).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from functools import partial

from benchmarks.micro import samples
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.ports import OutgoingEmail
from email_worker.render.headers import check_header_value
from email_worker.render.mime import build_message, is_bare_address
from email_worker.render.textify import html_to_text

PART = "mime"
HEADERS = ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "MIME-Version")


def library_message(outgoing: OutgoingEmail) -> bytes:
    """The same email through ``EmailMessage`` (``policy.SMTP``: CRLF line ends)."""
    content = outgoing.content
    headers = {
        "From": outgoing.sender,
        "To": outgoing.recipient,
        "Subject": content.subject,
        "Message-ID": outgoing.message_id,
    }
    if content.list_unsubscribe:
        headers["List-Unsubscribe"] = content.list_unsubscribe
    for name, value in headers.items():
        check_header_value(name, value)
    if not is_bare_address(outgoing.recipient):
        raise ValueError("To: not exactly one address")
    message = EmailMessage(policy=policy.SMTP)
    for name, value in headers.items():
        message[name] = value
    message["Date"] = format_datetime(datetime.now(UTC))
    message.set_content(content.text, cte="quoted-printable")
    message.add_alternative(content.html, subtype="html", cte="quoted-printable")
    return message.as_bytes()


def _parsed(wire: bytes) -> tuple[dict[str, str], list[tuple[str, str]]]:
    message = message_from_bytes(wire, policy=policy.default)
    headers = {name: str(message[name]).strip() for name in HEADERS}
    assert message.get_content_type() == "multipart/alternative", "not multipart/alternative"
    assert message["Date"] is not None, "no Date"
    parts = []
    for part in message.iter_parts():
        body = part.get_content()
        parts.append((part.get_content_type(), str(body).replace("\r\n", "\n").rstrip("\n")))
    return headers, parts


def check(outgoing: OutgoingEmail) -> str:
    """How the two messages are equivalent; ``AssertionError`` if they are not."""
    ours, theirs = _parsed(build_message(outgoing)), _parsed(library_message(outgoing))
    assert ours[0] == theirs[0], f"headers differ: {ours[0]} != {theirs[0]}"
    assert [kind for kind, _ in ours[1]] == ["text/plain", "text/html"], "parts of ours"
    assert ours[1] == theirs[1], "the decoded parts differ"
    return "parsed back: the same headers, parts and decoded bodies"


def long_url_as_encoded_words() -> bool:
    """Whether ``EmailMessage`` writes a ``List-Unsubscribe`` URL longer than a 78-character
    line as RFC 2047 encoded words (which no client reads as a URL); checked in each run."""
    message = EmailMessage(policy=policy.SMTP)
    message["List-Unsubscribe"] = f"<https://example.com/u/{'a' * 90}>"
    return b"=?utf-8?" in message.as_bytes()


def cases(items: int = 40) -> dict[str, OutgoingEmail]:
    """The welcome email (~2 KB HTML) and the digest (~40 KB HTML), each with its text part."""
    found = {}
    for html in (samples.welcome_html(), samples.digest_html(items)):
        size = len(html.encode()) / 1024
        found[f"{size:.1f} KB HTML + text" if size < 10 else f"{size:.0f} KB HTML + text"] = (
            samples.outgoing(html, html_to_text(html))
        )
    return found


def run(rounds: int, scale: float = 1.0, items: int = 40) -> list[Comparison]:
    """Ours against ``EmailMessage`` on each email; ``scale`` multiplies the calls per round."""
    notes = (
        "EmailMessage writes a List-Unsubscribe URL longer than one line as encoded words: "
        + ("yes, on this Python" if long_url_as_encoded_words() else "no, on this Python"),
    )
    found = []
    for (case, outgoing), calls in zip(cases(items).items(), (1000, 200), strict=True):
        equivalent = check(outgoing)
        mine, theirs = measure_pair(
            Side("mime.build_message", partial(build_message, outgoing)),
            Side("EmailMessage + policy.SMTP", partial(library_message, outgoing)),
            calls=max(1, int(calls * scale)),
            rounds=rounds,
        )
        found.append(Comparison(PART, case, mine, theirs, equivalent, notes))
    return found
