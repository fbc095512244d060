"""The sender settings (CONTRACT section 11): ``FROM_ADDRESS``, ``FROM_NAME``, ``REPLY_TO``,
``RETURN_PATH``, and the names ``DKIM_DOMAIN`` and ``DKIM_SELECTOR`` (section 17), read once
at start-up into plain values.

A mailbox setting is one address, optionally with a display name (``Acme Support
<noreply@acme.com>``, ``"Acme, Inc." <noreply@acme.com>``): ``email-validator`` parses it.
An unquoted name is also taken as it is written, specials and non-ASCII letters included
(``Équipe Acme, Inc. <noreply@acme.com>``: RFC 6532 allows UTF-8 there, and an environment
variable is no place for nested quotes); only ``<``, ``>``, ``"``, ``@`` and a backslash send
it to the strict parser. ``FROM_NAME`` takes any name as it is. Every address must be ASCII
(an internationalised domain in punycode): the Message-ID domain is the From address's, and a
non-ASCII envelope sender would need SMTPUTF8 for every message. A display name passes the
header check every header value passes (``render.headers``: no control character, line
separator or encoded word). Every function raises ``ValueError`` with what is wrong;
``Settings`` names the setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from email_validator import EmailNotValidError, validate_email

from email_worker.render.headers import unsafe_reason

# A DNS name as DKIM uses it (RFC 6376 section 3.5, ``d=`` and ``s=``): dot-separated labels
# of letters, digits and inner hyphens, ASCII (punycode for an internationalised name).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TRAILING_DOMAIN = re.compile(r"@([A-Za-z0-9.-]{1,253})>?$")
# ``Name <address>`` with an unquoted name holding nothing a parser reads as structure.
_NAME_ADDR = re.compile(r'(?P<name>[^<>"@\\]+)<(?P<address>[^<>]*)>')


def parse_mailbox(value: str, *, display_name: bool = True) -> tuple[str | None, str]:
    """``(display name or None, address)`` of a mailbox setting. Without ``display_name``,
    a bare address only (``RETURN_PATH``)."""
    text = value.strip()
    text, local_domain = _stand_in_for_dotless_domain(text)
    split = _NAME_ADDR.fullmatch(text) if display_name else None
    if split is not None:  # the name is checked below, the address alone by the validator
        text = split.group("address")
    try:
        checked = validate_email(
            text,
            allow_display_name=display_name and split is None,
            allow_smtputf8=False,  # an ASCII address (see the module docstring)
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            check_deliverability=False,
            test_environment=True,  # a ".test" domain in tests and staging
        )
    except EmailNotValidError as exc:
        example = "Acme Support <noreply@acme.com>" if display_name else "bounces@acme.com"
        raise ValueError(f"must be one ASCII address like {example}: {exc}") from None
    address = checked.normalized
    if local_domain is not None:
        address = address.rpartition("@")[0] + "@" + local_domain.lower()
    if not address.isascii():
        raise ValueError("must be ASCII: give an internationalised domain in punycode")
    given = split.group("name") if split is not None else checked.display_name
    name = given.strip() if given else None
    return (check_display_name(name) if name else None), address


def _stand_in_for_dotless_domain(text: str) -> tuple[str, str | None]:
    """email-validator refuses dotless and special-use domains (``localhost``, ``mailhost``)
    that internal relays accept and that ``FROM_ADDRESS`` always took: such a domain is checked
    here as a DNS name and replaced by a stand-in for the validator (then put back)."""
    found = _TRAILING_DOMAIN.search(text)
    if found is None or "." in found.group(1) or not _DNS_NAME.fullmatch(found.group(1)):
        return text, None
    return text[: found.start(1)] + "example.com" + text[found.end(1) :], found.group(1)


def check_display_name(value: str) -> str:
    """``value`` when it is safe as a display name (the header check), else ``ValueError``."""
    problem = unsafe_reason(value)
    if problem is not None:
        raise ValueError(f"display name: {problem}")
    return value


def check_dns_name(value: str) -> str:
    """``value`` when it is an ASCII DNS name (``DKIM_DOMAIN``, ``DKIM_SELECTOR``)."""
    if len(value) > 253 or _DNS_NAME.fullmatch(value) is None:
        raise ValueError("must be an ASCII DNS name like example.com (punycode for IDN)")
    return value


# The checks of the optional sender settings, by field name (``Settings`` runs them).
SENDER_CHECKS: dict[str, Callable[[str], object]] = {
    "from_name": check_display_name,
    "reply_to": parse_mailbox,
    "return_path": lambda value: parse_mailbox(value, display_name=False),
    "dkim_domain": check_dns_name,
    "dkim_selector": check_dns_name,
}
