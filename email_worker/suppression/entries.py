"""What a suppression entry is: its reasons and their order, its sources, and the one way an
address is normalised, keyed and masked (CONTRACT section 15).

Normalisation: surrounding spaces stripped, Unicode NFC, the domain lower-cased and written in
its Unicode form (an IDNA ``xn--`` label is decoded, so a bounce report naming the A-label
matches the address we sent to), and the local part **folded to lower case**. RFC 5321 lets a
local part be case-sensitive, but nearly every mailbox provider treats it as case-insensitive,
and a suppression list should err on the side of not sending. Nothing else is changed: a
``+tag`` or the dots of a Gmail address name different addresses here.

The key is SHA-256 of the normalised address (the table's primary key, so a lookup is one index
probe). It is not secret: the address itself is stored beside it for ``list`` and ``remove``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import idna


class SuppressionReason(StrEnum):
    """Why an address is suppressed. ``RANK`` orders them: a stronger reason is never replaced
    by a weaker one when the same address is added again."""

    COMPLAINT = "complaint"  # the recipient reported us as spam: the reputation's worst signal
    HARD_BOUNCE = "hard_bounce"  # the mailbox does not exist (5.1.x)
    MANUAL = "manual"  # an operator's decision
    UNSUBSCRIBE = "unsubscribe"  # the recipient left the bulk mail (RFC 8058 one-click)


RANK = {
    SuppressionReason.UNSUBSCRIBE: 1,
    SuppressionReason.MANUAL: 2,
    SuppressionReason.HARD_BOUNCE: 3,
    SuppressionReason.COMPLAINT: 4,
}

# Sources seen so far: smtp (a 5.1.x at RCPT), ses, sendgrid, mailgun, postmark, dsn, cli,
# unsubscribe. Any short lower-case word is accepted, so a new intake needs no migration.
SOURCE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
MAX_DETAIL = 200
MAX_ADDRESS = 254


@dataclass(frozen=True)
class Entry:
    """One suppressed address, as stored (the address normalised)."""

    address: str
    reason: SuppressionReason
    source: str
    detail: str
    first_seen: datetime
    last_seen: datetime
    expires_at: datetime | None = None


def normalise(address: str) -> str:
    """The address as the list stores and compares it (see the module's docstring). Raises
    ``ValueError`` (with no part of the address in its message) for a value with no local
    part, no domain, more or fewer than one ``@``, whitespace or control characters, or more
    than 254 characters."""
    value = address.strip()
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise ValueError("not a single local@domain address")
    # isprintable() is False for every C* and Z* character but the ASCII space.
    if len(value) > MAX_ADDRESS or not value.isprintable() or " " in value:
        raise ValueError("the address has whitespace, control characters or is too long")
    domain = domain.lower().rstrip(".")
    if "xn--" in domain:
        # Not valid IDNA: compared as written (lower case).
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            domain = idna.decode(domain)
    return f"{local.lower()}@{domain}"


def address_key(normalised: str) -> bytes:
    """The table key of an address already normalised: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(normalised.encode("utf-8")).digest()


def mask(address: str) -> str:
    """``j***@example.com``: the first character of the local part and the domain, for lists
    shown to people (the domain alone is not personal data under RELIABILITY rule 18)."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def check_source(source: str) -> str:
    """``source`` when it is a short lower-case word; raises ``ValueError`` otherwise."""
    if not SOURCE_PATTERN.fullmatch(source):
        raise ValueError("a source is a short lower-case word (smtp, ses, cli, ...)")
    return source
