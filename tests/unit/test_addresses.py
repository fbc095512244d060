"""Recipient address validation: one plain mailbox or ``recipient_invalid``, never the address
in the detail."""

from __future__ import annotations

import pytest

from schemas.addresses import MAX_ADDRESS_LENGTH, validate_address
from schemas.failures import PermanentFailure, Reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("bob@example.com", "bob@example.com"),
        ("Bob.Smith+tag@Example.COM", "Bob.Smith+tag@example.com"),  # local part kept as given
        ("  bob@example.com ", "bob@example.com"),  # surrounding spaces only
        ("o'brien@example.org", "o'brien@example.org"),
        ("x@münchen.de", "x@münchen.de"),
        ("x@xn--mnchen-3ya.de", "x@münchen.de"),  # IDNA normalised to one form
        ("josé@example.com", "josé@example.com"),
    ],
)
def test_valid_addresses_are_normalised(given: str, expected: str) -> None:
    assert validate_address(given) == expected


HOSTILE: list[tuple[str, object, str]] = [
    ("not a string", 42, "string"),
    ("none", None, "string"),
    ("list", ["a@example.com"], "string"),
    ("empty", "", "empty"),
    ("spaces only", "   ", "empty"),
    ("comma list", "a@example.com,b@example.com", "several"),
    ("comma space list", "a@example.com, b@example.com", "whitespace"),
    ("semicolon list", "a@example.com;b@example.com", "several"),
    ("display name", "Bob <bob@example.com>", "whitespace"),
    ("display name without space", "Bob<bob@example.com>", "display names"),
    ("angle brackets", "<bob@example.com>", "angle brackets"),
    ("CRLF header injection", "bob@example.com\r\nBcc: eve@evil.test", "control"),
    ("bare LF", "bob@example.com\nBcc: eve@evil.test", "control"),
    ("NUL", "bob@example.com\x00", "control"),
    ("tab", "bob\t@example.com", "control"),
    ("NEL U+0085", "bob@example.com\u0085Bcc: eve@evil.test", "control"),
    ("line separator U+2028", "bob@example.com\u2028Bcc: eve@evil.test", "separator"),
    ("paragraph separator U+2029", "bob@example.com\u2029", "separator"),
    ("zero width space", "bob\u200b@example.com", "format"),
    ("bidi override", "bob\u202e@example.com", "format"),
    ("encoded word", "=?utf-8?q?bob?=@example.com", "encoded words"),
    ("encoded word in domain", "bob@=?utf-8?b?ZXZpbA==?=.com", "encoded words"),
    ("quoted local part", '"bob@evil.test"@example.com', "quoted"),
    ("quoted with comma", '"a,b"@example.com', "several"),
    ("backslash", "bob\\@example.com", "quoted"),
    ("comment", "bob(comment)@example.com", "comments"),
    ("two at signs", "bob@evil.test@example.com", "one @"),
    ("no at sign", "bob.example.com", "one @"),
    ("no domain dot", "bob@localhost", "syntax"),
    ("double dot", "bob..smith@example.com", "syntax"),
    ("domain literal", "bob@[127.0.0.1]", "syntax"),
    ("empty local", "@example.com", "syntax"),
    ("too long", "a" * 64 + "@" + ("b" * 60 + ".") * 3 + "c" * 12 + ".com", "longer"),
]


@pytest.mark.parametrize(
    ("given", "fragment"),
    [(given, fragment) for _, given, fragment in HOSTILE],
    ids=[case_id for case_id, _, _ in HOSTILE],
)
def test_hostile_addresses_are_refused_without_echo(given: object, fragment: str) -> None:
    with pytest.raises(PermanentFailure) as caught:
        validate_address(given)
    assert caught.value.reason is Reason.RECIPIENT_INVALID
    assert fragment in caught.value.detail
    if isinstance(given, str) and given.strip():
        assert given.strip() not in caught.value.detail
        assert "example.com" not in caught.value.detail
        assert "bob" not in caught.value.detail.lower()


def test_length_limit_is_exact() -> None:
    local = "a" * 64
    domain_254 = ("b" * 62 + ".") * 2 + "c" * (254 - 65 - 126 - 4) + ".com"
    at_limit = f"{local}@{domain_254}"
    assert len(at_limit) == MAX_ADDRESS_LENGTH
    assert validate_address(at_limit) == at_limit
    with pytest.raises(PermanentFailure) as caught:
        validate_address(at_limit + "m")
    assert "longer" in caught.value.detail
