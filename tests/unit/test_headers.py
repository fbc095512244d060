"""Header safety, the MIME message and the keyed identifiers (Message-ID, address hashes)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.message_ids import address_fingerprint, message_id_for
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.render.headers import check_header_value, unsafe_reason
from email_worker.render.mime import build_message, is_bare_address, serialize
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


# Folding: every header line within RFC 5322's 998 octets, on the ASCII and the SMTPUTF8 path.

_TEXT = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x7f\x85"
)
_WORD = st.one_of(
    st.text(_TEXT, min_size=1, max_size=12),
    st.text(_TEXT, min_size=60, max_size=1000),  # longer than a line: folding cannot split it
    st.text(st.sampled_from("ab"), min_size=900, max_size=1000),
)
_SUBJECTS = (
    st.lists(st.one_of(_WORD, st.sampled_from([" ", "  "])), max_size=40)
    .map(lambda parts: "".join(parts)[:998].strip())
    .filter(lambda value: unsafe_reason(value) is None)
)
_URL = st.text(st.sampled_from("abcXYZ019-._~/?=&%"), max_size=990).map(
    lambda path: f"<https://u.test/{path}>"
)
_UNSUBSCRIBE = (
    st.lists(_URL, min_size=1, max_size=3)
    .map(lambda urls: ", ".join(urls)[:998])
    .filter(lambda value: unsafe_reason(value) is None)
)
_RECIPIENTS = st.sampled_from(["ann@example.test", "änn@exämple.test"])


def _parsed(wire: bytes) -> email.message.EmailMessage:
    text = wire.decode("utf-8")  # RFC 6532 headers; ASCII ones decode the same
    return email.message_from_string(text, policy=email.policy.default)


@settings(max_examples=300, deadline=None)
@given(subject=_SUBJECTS, unsubscribe=st.none() | _UNSUBSCRIBE, recipient=_RECIPIENTS)
def test_every_line_fits_and_every_header_reads_back_as_given(
    subject: str, unsubscribe: str | None, recipient: str
) -> None:
    base = _outgoing(subject=subject, unsubscribe=unsubscribe)
    outgoing = OutgoingEmail(base.sender, recipient, base.message_id, base.content)
    try:
        wire = serialize(build_message(outgoing), utf8=not recipient.isascii())
    except PermanentFailure as refused:  # only a URL longer than a line may be refused
        assert refused.reason is Reason.UNSAFE_CONTENT
        assert refused.detail.startswith("header List-Unsubscribe: a word too long")
        assert unsubscribe is not None and len(max(unsubscribe.split(), key=len)) > 900
        return

    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    parsed = _parsed(wire)
    assert parsed["Subject"] == subject
    assert parsed.get("List-Unsubscribe") == unsubscribe
    assert parsed["To"] == recipient


def test_a_998_character_subject_without_spaces_fits_in_998_octets() -> None:
    subject = "x" * 998

    wire = serialize(build_message(_outgoing(subject=subject)), utf8=False)

    assert max(len(line) for line in wire.split(b"\r\n")) <= 78
    assert _parsed(wire)["Subject"] == subject


def test_long_subjects_and_unsubscribe_lists_are_folded_at_spaces() -> None:
    subject = " ".join(["word"] * 100)
    urls = ", ".join(f"<https://u.test/{'p' * 40}{n}>" for n in range(3))

    wire = serialize(build_message(_outgoing(subject=subject, unsubscribe=urls)), utf8=False)

    head = wire.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in head  # plain words, no encoded words
    assert max(len(line) for line in head.split("\r\n")) <= 78
    assert _parsed(wire)["List-Unsubscribe"] == urls


def test_an_unsubscribe_url_too_long_for_any_line_is_refused() -> None:
    with pytest.raises(PermanentFailure) as refused:
        # 998 characters: within the value cap, but not with "List-Unsubscribe: " before it.
        build_message(_outgoing(unsubscribe=f"<https://u.test/{'p' * 980}>"))

    assert refused.value.reason is Reason.UNSAFE_CONTENT
    assert refused.value.detail == (
        "header List-Unsubscribe: a word too long to fold into 998 octets"
    )
