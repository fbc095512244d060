"""Header safety, the MIME message and the keyed identifiers (Message-ID, address hashes)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from email_worker.headers import check_header_value
from email_worker.message_ids import address_fingerprint, message_id_for
from email_worker.mime import build_message, is_bare_address, serialize
from email_worker.ports import OutgoingEmail, RenderedEmail
from schemas.failures import PermanentFailure, Reason

SECRET = b"test-secret"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Hello\rBcc: x@evil.test", "U+000D"),
        ("Hello\nBcc: x@evil.test", "U+000A"),
        ("Hello\r\nBcc: x@evil.test", "U+000D"),
        ("Hello\x00", "U+0000"),
        ("Hello\x1b[31m", "U+001B"),
        ("Tab\there", "U+0009"),
        ("Del\x7f", "U+007F"),
        ("Next\x85line", "U+0085"),
        ("Line\u2028separator", "U+2028"),
        ("Paragraph\u2029separator", "U+2029"),
        ("=?utf-8?q?Hello=0D=0ABcc:_x@evil.test?=", "encoded-word"),
        ("Sneaky =?UTF-8?B?SGk=?=", "encoded-word"),
        ("x" * 999, "longer than 998"),
    ],
)
def test_unsafe_header_values_are_refused_without_echoing_them(value: str, problem: str) -> None:
    with pytest.raises(PermanentFailure) as caught:
        check_header_value("Subject", value)

    assert caught.value.reason is Reason.UNSAFE_CONTENT
    assert "Subject" in caught.value.detail
    assert problem in caught.value.detail
    assert "evil" not in caught.value.detail and "Hello" not in caught.value.detail


@pytest.mark.parametrize(
    "value",
    [
        "Welcome to Acme, Ann!",
        "Ünïcödé — 你好 — 🎉",
        "Price: 5 = 5?",  # "=" and "?" apart are fine; only "=?" opens an encoded word
        "x" * 998,
        "",
    ],
)
def test_clean_header_values_pass_unchanged(value: str) -> None:
    assert check_header_value("Subject", value) == value


def test_the_length_cap_is_configurable() -> None:
    with pytest.raises(PermanentFailure):
        check_header_value("X-Short", "abcdef", max_length=5)


def _outgoing(subject: str = "Hi Ann", unsubscribe: str | None = None) -> OutgoingEmail:
    content = RenderedEmail(
        subject=subject,
        html="<p>Hello Ann ✓</p>\n.leading dot",
        text="Hello Ann ✓",
        template_code="welcome",
        template_version="v1",
        list_unsubscribe=unsubscribe,
    )
    return OutgoingEmail(
        sender="Acme <notify@acme.test>",
        recipient="ann@example.test",
        message_id=message_id_for("req-1", SECRET, "acme.test"),
        content=content,
    )


def test_message_is_multipart_alternative_text_then_html_in_utf8() -> None:
    outgoing = _outgoing(unsubscribe="<https://acme.test/u/1>")

    wire = serialize(build_message(outgoing), utf8=False)
    parsed = email.message_from_bytes(wire, policy=email.policy.default)

    assert wire.isascii() and b"\r\n" in wire and re.search(rb"(?<!\r)\n", wire) is None
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().strip() == "Hello Ann ✓"
    assert parsed["From"] == "Acme <notify@acme.test>"
    assert parsed["To"] == "ann@example.test"
    assert parsed["Message-ID"] == outgoing.message_id
    assert parsed["List-Unsubscribe"] == "<https://acme.test/u/1>"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Date"].datetime.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "outgoing",
    [
        _outgoing(subject="Hi\r\nBcc: evil@x.test"),
        _outgoing(unsubscribe="<https://x.test>\r\nBcc: evil@x.test"),
        OutgoingEmail(
            "a@acme.test", "ann@example.test\nBcc: e@x.test", "<1@a>", _outgoing().content
        ),
        OutgoingEmail("a@acme.test", "ann@example.test, bob@x.test", "<1@a>", _outgoing().content),
        OutgoingEmail("a@acme.test\r", "ann@example.test", "<1@a>", _outgoing().content),
    ],
)
def test_every_header_is_checked_before_building(outgoing: OutgoingEmail) -> None:
    with pytest.raises(PermanentFailure) as caught:
        build_message(outgoing)

    assert caught.value.reason is Reason.UNSAFE_CONTENT
    assert "evil" not in caught.value.detail and "bob" not in caught.value.detail


def test_message_id_is_stable_unguessable_and_well_formed() -> None:
    first = message_id_for("req-1", SECRET, "acme.test")

    assert first == message_id_for("req-1", SECRET, "acme.test")
    assert first != message_id_for("req-2", SECRET, "acme.test")
    assert first != message_id_for("req-1", b"other-secret", "acme.test")
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.test>", first)
    assert "req-1" not in first


@pytest.mark.parametrize(("secret", "domain"), [(b"", "acme.test"), (SECRET, "a b>")])
def test_message_id_refuses_empty_secret_and_bad_domain(secret: bytes, domain: str) -> None:
    with pytest.raises(ValueError):
        message_id_for("req-1", secret, domain)


def test_address_fingerprint_keeps_domain_and_hides_the_address() -> None:
    domain, digest = address_fingerprint("Ann.Smith@Example.TEST", SECRET)

    assert domain == "example.test"
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert address_fingerprint("ann.smith@example.test", SECRET) == (domain, digest)
    assert address_fingerprint("bob@example.test", SECRET)[1] != digest
    assert address_fingerprint("ann.smith@example.test", b"other")[1] != digest
    assert address_fingerprint("not-an-address", SECRET)[0] == ""


@pytest.mark.parametrize(
    ("address", "bare"),
    [
        ("ann@example.com", True),
        ("first.last+tag@sub.example.co", True),
        ("Ann <ann@example.com>", False),
        ("ann@example.com, bob@example.com", False),
        ("ann@example.com;bob@example.com", False),
        ('"ann"@example.com', False),
        ("ann(comment)@example.com", False),
        ("undisclosed:ann@example.com;", False),
        ("ann @example.com", False),
        ("ann@example.com\r\nBcc: x@y.z", False),
        ("ann@b@example.com", False),
        ("annexample.com", False),
    ],
)
def test_bare_address(address: str, bare: bool) -> None:
    assert is_bare_address(address) is bare


def test_a_to_header_that_is_not_one_bare_address_is_refused() -> None:
    outgoing = _outgoing()
    group = OutgoingEmail(
        outgoing.sender, "undisclosed:ann@example.com;", outgoing.message_id, outgoing.content
    )
    with pytest.raises(PermanentFailure) as refused:
        build_message(group)
    assert refused.value.reason == Reason.UNSAFE_CONTENT
