"""The suppression list's address rules: normalisation (property-based: it is fed from gateways,
provider reports and the CLI), the key, masking and sources."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.suppression.entries import (
    RANK,
    SuppressionReason,
    address_key,
    check_source,
    mask,
    normalise,
)

_ATOM = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+_-"),
    min_size=1,
    max_size=30,
)
_LABEL = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789"),
    min_size=1,
    max_size=12,
)
_DOMAINS = st.lists(_LABEL, min_size=2, max_size=4).map(".".join)
_ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}", _ATOM, _DOMAINS)
_MESSAGES = {
    "not a single local@domain address",
    "the address has whitespace, control characters or is too long",
}
_UNICODE_LOCAL = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=20
)


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(_ADDRESSES)
def test_normalising_is_idempotent_and_ignores_case_and_surrounding_space(address: str) -> None:
    once = normalise(address)
    assert normalise(once) == once
    assert normalise(f"  {address.upper()} ") == once == normalise(address.lower())
    assert once.count("@") == 1 and once == once.lower()
    assert address_key(once) == address_key(normalise(address.swapcase()))


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(_UNICODE_LOCAL, _DOMAINS)
def test_unicode_local_parts_are_folded_and_stable(local: str, domain: str) -> None:
    once = normalise(f"{local}@{domain}")
    assert normalise(once) == once
    assert once.rpartition("@")[0] == unicodedata.normalize("NFC", local).lower()


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("ada@example.com.", "ada@example.com"),
        ("otto@XN--BCHER-KVA.de", "otto@bücher.de"),
        ("otto@Bücher.DE", "otto@bücher.de"),
        ("a.b+news@gmail.com", "a.b+news@gmail.com"),  # tags and dots are other addresses
        ("ADA@xn--invalid--.test", "ada@xn--invalid--.test"),  # not IDNA: kept as written
    ],
)
def test_normalised_forms(given_: str, expected: str) -> None:
    assert normalise(given_) == expected


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(st.text(max_size=300))
def test_anything_else_is_refused_or_gives_one_address_without_space(value: str) -> None:
    try:
        result = normalise(value)
    except ValueError as refused:
        # The message never quotes what was given (it may be an address).
        assert str(refused) in _MESSAGES
        return
    local, _, domain = result.rpartition("@")
    assert local and domain and "@" not in local
    assert result.isprintable() and " " not in result
    assert normalise(result) == result


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "no-at",
        "@example.com",
        "ada@",
        "a@b@c.d",
        "a b@c.d",
        "a\r\n@c.d",
        "a@c.d\x00",
        "a\u2028b@c.d",
        "x" * 250 + "@c.de",
    ],
)
def test_what_is_not_one_address_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ValueError) as refused:
        normalise(value)
    assert str(refused.value) in _MESSAGES


def test_the_key_is_sha256_of_the_normalised_address() -> None:
    # Published SHA-256 of b"ada@example.com" (sha256sum): the table's keys must never change.
    assert address_key("ada@example.com").hex() == (
        "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
    )
    assert address_key("ada@example.com") != address_key("ada@example.org")


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("ada@example.com", "a***@example.com"),
        ("x@b.c", "x***@b.c"),
        ("ädä@exämple.com", "ä***@exämple.com"),
    ],
)
def test_masking_keeps_one_character_and_the_domain(address: str, masked: str) -> None:
    assert mask(address) == masked


def test_reasons_are_ranked_complaint_first_and_unsubscribe_last() -> None:
    order = sorted(SuppressionReason, key=RANK.__getitem__, reverse=True)
    assert [r.value for r in order] == ["complaint", "hard_bounce", "manual", "unsubscribe"]


@pytest.mark.parametrize(
    "source", ["smtp", "ses", "sendgrid", "dsn", "cli", "unsubscribe", "a.b-c_1"]
)
def test_short_lower_case_sources_are_accepted(source: str) -> None:
    assert check_source(source) == source


@pytest.mark.parametrize("source", ["", "SES", "1ses", "s p", "x" * 33, "ses;drop"])
def test_other_sources_are_refused(source: str) -> None:
    with pytest.raises(ValueError):
        check_source(source)
