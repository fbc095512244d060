"""The one vocabulary every provider's report is normalised to, and the small, linear-time
helpers the parsers share (addresses, Message-IDs, status codes, short details).

A ``Report`` says what happened to one recipient of one message: ``hard_bounce`` (the address
will never take mail: suppressed), ``soft_bounce`` (a temporary failure: counted only),
``complaint`` (the recipient reported the message as spam: suppressed) or ``unsubscribe`` (the
recipient left: suppressed). It carries the ids that tie it to a request we sent: our
``Message-ID`` as the report quotes it, and the provider's own ids of the message. Its ``code``
and ``detail`` are short and never hold an address (``scrub`` masks any local part): they end
up in the status callback's ``error`` and in the suppression entry.

Parsers raise ``Malformed`` (HTTP 400) for a body that is not a report of their provider; an
event they do not act on is simply left out of the list they return.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from email_worker.logs import scrub
from email_worker.suppression.entries import normalise

MAX_DETAIL = 160  # the callback's error is "<status>: <code> <detail>", within 200 characters
MAX_MESSAGE_ID = 250
# An RFC 3463 enhanced status code, alone (not inside a longer run of digits and dots). Bounded
# quantifiers only: linear in the text (RELIABILITY rule 19).
_ENHANCED = re.compile(r"(?<![0-9.])([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9]|\.[0-9])")
_SPACES = re.compile(r"\s+")


class Kind(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


# What a kind does: the suppression reason it adds, and the request status it records.
SUPPRESSES = {
    Kind.HARD_BOUNCE: "hard_bounce",
    Kind.COMPLAINT: "complaint",
    Kind.UNSUBSCRIBE: "unsubscribe",
}
REQUEST_STATUS = {Kind.HARD_BOUNCE: "bounced", Kind.COMPLAINT: "complained"}


class Malformed(ValueError):
    """The body is not a report of this provider (the message says what is wrong, never what
    the body held)."""


@dataclass(frozen=True)
class Report:
    """One recipient's outcome, normalised. ``address`` is None only for a DSN or ARF report
    that names no usable recipient (complaint reports often redact it): such a report acts
    only through the request it is tied to."""

    kind: Kind
    address: str | None
    code: str = ""
    detail: str = ""
    message_ids: tuple[str, ...] = ()
    provider_ids: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """``<code> <detail>``, short and address-free: the suppression detail and the tail of
        the callback's ``bounced: ...`` error."""
        return " ".join(part for part in (self.code, self.detail) if part)[:MAX_DETAIL]


def json_body(body: bytes) -> object:
    """The JSON document of a webhook body. Raises ``Malformed`` for anything else (bad UTF-8,
    bad JSON, nesting deep enough to exhaust the parser, numbers too long to convert)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError are both
        raise Malformed("the body is not a JSON document") from exc


def field(document: object, *path: str) -> object:
    """The value at ``path`` in nested JSON objects, or None where the path breaks."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def text(value: object, limit: int = MAX_DETAIL) -> str:
    """``value`` as one short line: strings only (anything else is ""), whitespace and control
    characters collapsed, every address's local part masked, cut to ``limit`` characters."""
    if not isinstance(value, str):
        return ""
    # Cut before the linear passes too, so a huge field costs no more than a short one.
    line = _SPACES.sub(" ", value[: limit * 4]).strip()
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    return scrub(line)[:limit].strip()


def address(value: object) -> str | None:
    """The recipient a report names, normalised as the suppression list stores it, or None
    when it is not one plausible ``local@domain``. Accepts the DSN forms ``rfc822; a@b`` and
    ``<a@b>``."""
    if not isinstance(value, str) or len(value) > 400:
        return None
    candidate = value.strip()
    kind, semicolon, rest = candidate.partition(";")
    if semicolon and "@" not in kind:  # an address type ("rfc822;", RFC 3464 section 2.3.2)
        candidate = rest.strip()
    candidate = candidate.removeprefix("<").removesuffix(">").strip()
    try:
        return normalise(candidate)
    except ValueError:
        return None


def message_id(value: object) -> str | None:
    """A Message-ID in its ``<left@right>`` form (angle brackets added when a provider drops
    them), or None when ``value`` cannot be one."""
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    if not candidate.startswith("<"):
        candidate = f"<{candidate}>"
    inner = candidate[1:-1]
    if (
        not candidate.endswith(">")
        or len(candidate) > MAX_MESSAGE_ID
        or inner.count("@") != 1
        or not inner.isascii()
        or not inner.isprintable()
        or any(ch in inner for ch in " <>")
    ):
        return None
    return candidate


def ids(*values: object) -> tuple[str, ...]:
    """The distinct non-empty short strings among ``values`` (provider ids), in order."""
    found: list[str] = []
    for value in values:
        cleaned = value.strip() if isinstance(value, str) else ""
        if 0 < len(cleaned) <= MAX_MESSAGE_ID and cleaned not in found:
            found.append(cleaned)
    return tuple(found)


def enhanced_code(value: object) -> str | None:
    """The first RFC 3463 status code (``5.1.1``) in ``value``, or None."""
    if not isinstance(value, str):
        return None
    found = _ENHANCED.search(value[:2000])
    return ".".join(found.groups()) if found else None
