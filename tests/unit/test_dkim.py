"""DKIM signing (CONTRACT section 17): what we sign verifies with ``dkimpy`` against the public
key (RSA-2048 and Ed25519), a change on the way fails it, and our relaxed canonicalisation is
byte for byte ``dkimpy``'s."""

from __future__ import annotations

import re

import pytest
from dkim.canonicalization import Relaxed
from dkim.util import parse_tag_value
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.dkim import DkimSigner, SigningKey
from email_worker.dkim.canonical import relaxed_body, relaxed_header, split_message
from email_worker.dkim.keys import parse_signing_key
from email_worker.ports import Mailbox, OutgoingEmail, RenderedEmail
from email_worker.render.mime import build_message
from tests.support.dkim import DOMAIN, SELECTOR, Verifier, new_key, pem

NOW = 1_796_000_000.0


@pytest.fixture(scope="module", params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return new_key(request.param)


def _signer(key: SigningKey) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key, clock=lambda: NOW)


def _message(
    subject: str = "Welcome, Zoë ✓",
    text: str = "Hello Ann\n.a line starting with a dot\n\n",
    recipient: str = "ann@example.org",
    **extra: object,
) -> bytes:
    content = RenderedEmail(
        subject=subject,
        html="<p>Hello <b>Ann</b></p>\n.dot-leading\n" + text,
        text=text,
        template_code="welcome",
        template_version="1",
        **extra,  # type: ignore[arg-type]
    )
    return build_message(
        OutgoingEmail(
            "noreply@acme.test",
            recipient,
            "<5f2c@acme.test>",
            content,
            sender_name="Acme Støtte",
            reply_to=Mailbox("help@acme.test", "Acme Help"),
        )
    )


def _tags(signed: bytes) -> dict[bytes, bytes]:
    header = signed.split(b"\r\n\r\n")[0]
    match = re.match(rb"DKIM-Signature:(.*?)\r\n(?! )", header + b"\r\n", re.S)
    assert match is not None
    return dict(parse_tag_value(match.group(1)))


LONG = "\n".join(f"{i:05d} .line with  double  spaces\tand a tab " * 2 for i in range(1200))
CASES = {
    "display names, non-ASCII subject": _message(),
    "one-click unsubscribe headers": _message(
        list_unsubscribe="<https://acme.test/u/t0k3n>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    ),
    "long body (about 100 KB), dot-leading lines": _message(text=LONG),
    "SMTPUTF8 (UTF-8 headers)": _message(recipient="ännä@exämple.org"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_signed_message_verifies_with_dkimpy(key: SigningKey, case: str) -> None:
    verifier = Verifier(key)
    message = CASES[case]

    signed = _signer(key).sign(message)

    assert signed.endswith(message)  # the header is prepended; nothing else changes
    assert verifier.verify(signed)
    assert verifier.asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]


def test_the_signature_says_what_the_contract_signs(key: SigningKey) -> None:
    plain = _tags(_signer(key).sign(_message()))
    one_click = _tags(_signer(key).sign(CASES["one-click unsubscribe headers"]))

    assert plain[b"a"] == key.algorithm.encode()
    assert plain[b"c"] == b"relaxed/relaxed"
    assert (plain[b"d"], plain[b"s"], plain[b"t"]) == (b"acme.test", b"s2026", b"1796000000")
    common = b"from:reply-to:to:subject:date:message-id:mime-version:content-type:"
    assert re.sub(rb"\s", b"", plain[b"h"]) == common + b"from"
    assert re.sub(rb"\s", b"", one_click[b"h"]) == (
        common + b"list-unsubscribe:list-unsubscribe-post:from"
    )


def test_the_header_is_ascii_and_folded_within_78_columns(key: SigningKey) -> None:
    signed = _signer(key).sign(_message())
    header = signed[: signed.index(b"\r\nFrom:")]

    assert header.isascii()
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))


def _tampered(signed: bytes) -> dict[str, bytes]:
    head, _, body = signed.partition(b"\r\n\r\n")
    return {
        "a body character": head + b"\r\n\r\n" + body.replace(b"Hello Ann", b"Hello Bob", 1),
        "the subject": signed.replace(b"Subject: ", b"Subject: Re: ", 1),
        "a second From above": b"From: evil@attacker.example\r\n" + signed,
        "the Reply-To": signed.replace(b"<help@acme.test>", b"<evil@attacker.example>", 1),
        "a removed header": signed.replace(b"MIME-Version: 1.0\r\n", b"", 1),
    }


def test_a_message_changed_on_the_way_fails_verification(key: SigningKey) -> None:
    verifier = Verifier(key)
    signed = _signer(key).sign(_message())
    assert verifier.verify(signed)

    failed = [what for what, message in _tampered(signed).items() if verifier.verify(message)]

    assert failed == []


def test_relaxed_changes_on_the_way_keep_it_valid(key: SigningKey) -> None:
    verifier = Verifier(key)
    signed = _signer(key).sign(_message())

    refolded = signed.replace(b"Subject: ", b"Subject:   ", 1)
    spaced = signed.replace(b"Hello Ann", b"Hello  \t Ann", 1) + b"\r\n\r\n"
    received = b"Received: from worker.test by relay.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n"

    assert verifier.verify(refolded)
    assert verifier.verify(spaced)
    assert verifier.verify(received + signed)


def test_another_key_of_the_same_kind_does_not_verify(key: SigningKey) -> None:
    other = Verifier(new_key("rsa" if key.algorithm == "rsa-sha256" else "ed25519"))

    assert not other.verify(_signer(key).sign(_message()))


_subjects = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=120
).filter(lambda s: "=?" not in s and s.strip())
_bodies = st.text(
    st.one_of(
        st.sampled_from([" ", "\t", "\n", "\r", ".", "="]),
        st.characters(codec="utf-8"),  # no lone surrogate: no text holds one
    ),
    max_size=600,
)


@settings(max_examples=40, deadline=None)
@given(subject=_subjects, text=_bodies)
def test_random_subjects_and_bodies_verify(key: SigningKey, subject: str, text: str) -> None:
    signed = _signer(key).sign(_message(subject=subject.strip(), text=text))

    assert Verifier(key).verify(signed)


# --- canonicalisation against dkimpy's --------------------------------------------------------

_line = st.text(st.sampled_from(["a", "b", ".", " ", "\t", "=", "é"]), max_size=12)
_crlf_bodies = st.builds(
    lambda lines, end: "\r\n".join(lines).encode("utf-8") + b"\r\n" * end,
    st.lists(_line, max_size=12),
    st.integers(min_value=0, max_value=3),
)


@settings(max_examples=300)
@given(body=_crlf_bodies)
def test_relaxed_body_is_dkimpys(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300)
@given(
    name=st.sampled_from([b"Subject", b"FROM", b"x-Thing ", b"List-Unsubscribe"]),
    parts=st.lists(_line, min_size=1, max_size=4),
)
def test_relaxed_header_is_dkimpys(name: bytes, parts: list[str]) -> None:
    value = b"\r\n ".join(part.encode("utf-8") for part in parts)  # folded lines

    expected = Relaxed.canonicalize_headers([(name, value + b"\r\n")])[0]
    assert relaxed_header(name, value) == expected[0] + b":" + expected[1]


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@acme.test\nTo: b@example.org\r\n\r\nbody\r\n",
        b"From: a@acme.test\r\n\r\nbody\rmore\r\n",
        b"From: a@acme.test\r\nTo: b@example.org\r\n",
        b"From: a@acme.test\r\nnot a field\r\n\r\nbody\r\n",
    ],
)
def test_what_is_no_crlf_message_is_refused(message: bytes) -> None:
    with pytest.raises(ValueError):
        split_message(message)


def test_split_keeps_continuation_lines_with_their_field() -> None:
    fields, body = split_message(b"Subject: a\r\n b\r\n\tc\r\nTo: x@y.z\r\n\r\nbody\r\n")

    assert fields == [(b"Subject", b" a\r\n b\r\n\tc"), (b"To", b" x@y.z")]
    assert body == b"body\r\n"


# --- keys -------------------------------------------------------------------------------------


def test_the_dns_record_carries_the_public_key(key: SigningKey) -> None:
    record = key.dns_record()
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"

    assert record.startswith(f"v=DKIM1; k={kind}; p=")
    if kind == "ed25519":  # RFC 8463: the raw 32-byte key, base64
        assert len(record.rpartition("p=")[2]) == 44


def test_a_pkcs1_rsa_key_is_accepted() -> None:
    from cryptography.hazmat.primitives import serialization

    rsa_key = new_key("rsa").key
    traditional = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )

    assert traditional.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert parse_signing_key(traditional).algorithm == "rsa-sha256"
    assert parse_signing_key(pem(new_key("ed25519"))).algorithm == "ed25519-sha256"
