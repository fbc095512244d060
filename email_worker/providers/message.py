"""The message as the JSON providers (SendGrid, Postmark) take it: the same subject, bodies and
headers the MIME message of ``render.mime`` carries (CONTRACT sections 9 and 16).

Each value is checked exactly as for SMTP: ``validated`` builds the MIME message, which checks
every header (CR, LF, NUL, encoded words: ``UNSAFE_CONTENT``), the display names and that
``To`` and ``Reply-To`` are one bare address each, and throws the bytes away. The provider then
builds its own MIME from the parts: ``text/plain`` first, then ``text/html``, as ours.
"""

from __future__ import annotations

from email.utils import formataddr

from email_worker.ports import OutgoingEmail
from email_worker.render.mime import build_message


def validated(email: OutgoingEmail) -> OutgoingEmail:
    """``email`` when the MIME message could be built from it; raises
    ``PermanentFailure(UNSAFE_CONTENT)`` as ``render.mime.build_message`` does."""
    build_message(email)
    return email


def body_parts(email: OutgoingEmail) -> list[tuple[str, str]]:
    """``(content type, text)`` of the parts, plain text first; an empty part is left out."""
    parts = [("text/plain", email.content.text), ("text/html", email.content.html)]
    return [(kind, value) for kind, value in parts if value]


def extra_headers(email: OutgoingEmail) -> list[tuple[str, str]]:
    """The headers a JSON provider takes as custom headers: ``Message-ID`` always, and
    ``List-Unsubscribe`` (with ``List-Unsubscribe-Post`` beside the worker's own one-click
    URL) when the message has one."""
    headers = [("Message-ID", email.message_id)]
    content = email.content
    if content.list_unsubscribe:
        headers.append(("List-Unsubscribe", content.list_unsubscribe))
        if content.list_unsubscribe_post:
            headers.append(("List-Unsubscribe-Post", content.list_unsubscribe_post))
    return headers


def mailbox(address: str, name: str | None) -> str:
    """``Name <address>`` (the name quoted when it holds specials, RFC 2047 encoded when it is
    not ASCII), or the bare address."""
    return formataddr((name, address)) if name else address
