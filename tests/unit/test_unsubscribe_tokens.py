"""Unsubscribe tokens: they round-trip for any address, carry no readable address, and every
forged, altered, truncated or foreign token reads as nothing (the endpoint's 404)."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.suppression.tokens import LazyTokens, UnsubscribeLinks, UnsubscribeTokens
from schemas.failures import DeferredFailure, Reason

KEY = bytes(range(32))
TOKENS = UnsubscribeTokens(KEY)
_LOCAL = st.text(alphabet=st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=64)
_ADDRESSES = st.builds(lambda local, host: f"{local}@{host}.example", _LOCAL, _LOCAL)


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(_ADDRESSES)
def test_a_token_reads_back_as_its_address_and_holds_no_readable_part_of_it(address: str) -> None:
    token = TOKENS.mint(address)
    assert TOKENS.read(token) == address
    assert token.isascii() and "=" not in token and "/" not in token and "+" not in token
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert address.encode() not in decoded and address.encode() not in token.encode()


def test_tokens_are_unpredictable_and_their_length_hides_the_address_length() -> None:
    assert TOKENS.mint("a@b.example") != TOKENS.mint("a@b.example")
    assert len(TOKENS.mint("a@b.example")) == len(TOKENS.mint("abcdefghijklmnop@b.example"))


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(st.data())
def test_any_altered_character_makes_the_token_unreadable(data: st.DataObject) -> None:
    token = TOKENS.mint("ada@example.com")
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    )
    altered = token[:position] + replacement + token[position + 1 :]
    if altered != token:
        assert TOKENS.read(altered) is None


@pytest.mark.parametrize(
    "token",
    ["", "x", "A" * 140, "not a token!", "../../etc/passwd", "%2e%2e", "A" * 5000],
)
def test_forged_tokens_read_as_nothing(token: str) -> None:
    assert TOKENS.read(token) is None


def test_truncated_and_foreign_tokens_read_as_nothing() -> None:
    token = TOKENS.mint("ada@example.com")
    assert TOKENS.read(token[:-1]) is None and TOKENS.read(token[:-8]) is None
    assert TOKENS.read(token + "AAAA") is None
    assert UnsubscribeTokens(os.urandom(32)).read(token) is None


def test_the_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        UnsubscribeTokens(b"short")


def test_links_put_the_token_in_place_of_the_placeholder() -> None:
    links = UnsubscribeLinks("https://mail.example.com/u/{token}?list=news", TOKENS)
    url = links.url_for("ada@example.com")
    prefix, suffix = "https://mail.example.com/u/", "?list=news"
    assert url.startswith(prefix) and url.endswith(suffix)
    assert TOKENS.read(url[len(prefix) : -len(suffix)]) == "ada@example.com"


def test_lazy_tokens_load_the_key_once_and_retry_after_a_failure() -> None:
    calls: list[int] = []

    def load() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise DeferredFailure(Reason.DATABASE_UNAVAILABLE, "OperationalError")
        return KEY

    lazy = LazyTokens(load)
    with pytest.raises(DeferredFailure):
        lazy.mint("ada@example.com")
    token = lazy.mint("ada@example.com")
    assert lazy.read(token) == "ada@example.com" == TOKENS.read(token)
    assert len(calls) == 2
