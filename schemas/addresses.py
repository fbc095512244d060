"""Recipient address validation: one mailbox, no tricks.

A message names exactly one recipient. This module owns the rule that turns whatever a gateway put
in an address field into one normalised mailbox, or refuses it with ``recipient_invalid``. Cheap
structural checks run first (type, length, control and line-separator characters, lists, display
names, encoded words, quoting) so that header-injection shapes are refused by rule, not by the
syntax checker's accident; ``email-validator`` then checks the syntax (never DNS). Failure details
never contain the address.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from schemas.failures import PermanentFailure, Reason

MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit (256) minus the angle brackets

# Characters that only ever appear in lists, display names, quoted or commented forms. The
# validator refuses most of them too, but refusing them here gives a precise, stable detail.
_STRUCTURAL: dict[str, str] = {
    ",": "several addresses are not allowed",
    ";": "several addresses are not allowed",
    "<": "display names and angle brackets are not allowed",
    ">": "display names and angle brackets are not allowed",
    '"': "quoted forms are not allowed",
    "\\": "quoted forms are not allowed",
    "(": "comments are not allowed",
    ")": "comments are not allowed",
}


def _refuse(detail: str) -> PermanentFailure:
    return PermanentFailure(Reason.RECIPIENT_INVALID, detail)


def _check_characters(value: str) -> None:
    """Refuse control, format, separator and whitespace characters anywhere in the address.

    Categories C* cover CR, LF, NUL, U+0085 and invisible format characters (bidi overrides,
    zero-width joiners); Z* cover U+2028/U+2029 and every kind of space. Any of them could split
    or disguise a header line (RELIABILITY rule 12).
    """
    for char in value:
        category = unicodedata.category(char)
        if category[0] == "C":
            raise _refuse("control or format characters are not allowed")
        if category[0] == "Z":
            raise _refuse("whitespace and line separators are not allowed")


def _check_structure(value: str) -> None:
    if "=?" in value:
        raise _refuse("encoded words are not allowed")
    for char, detail in _STRUCTURAL.items():
        if char in value:
            raise _refuse(detail)
    if value.count("@") != 1:
        raise _refuse("exactly one @ is required")


def validate_address(value: object) -> str:
    """Return ``value`` as one normalised mailbox (``local@domain``).

    The local part is kept exactly as given; the domain is normalised by ``email-validator``
    (lower case, IDNA in its Unicode form). Surrounding ASCII spaces are stripped; anything else
    unusual is refused. Never looks up DNS.

    Raises ``PermanentFailure(Reason.RECIPIENT_INVALID, detail)`` for a non-string, an empty
    value, more than 254 characters, control or line-separator characters, lists, display names,
    angle brackets, quotes, comments, encoded words (``=?``) or invalid syntax. The detail never
    contains the address.
    """
    if not isinstance(value, str):
        raise _refuse(f"address must be a string, not {type(value).__name__}")
    value = value.strip(" ")
    if not value:
        raise _refuse("address is empty")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise _refuse(f"address is longer than {MAX_ADDRESS_LENGTH} characters")
    _check_characters(value)
    _check_structure(value)
    try:
        checked = validate_email(
            value,
            check_deliverability=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
        )
    except EmailNotValidError:
        # The validator's message may quote parts of the address: keep it out of the detail.
        raise _refuse("address syntax is invalid") from None
    local_part = value.rpartition("@")[0]
    return f"{local_part}@{checked.domain}"
