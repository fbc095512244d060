"""``/unsubscribe/{token}`` (RFC 8058) over fakes: what each request answers and what it writes."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.suppression import endpoint as endpoint_module
from email_worker.suppression.endpoint import MAX_ONE_CLICK_BODY, UnsubscribeEndpoint, is_one_click
from email_worker.suppression.tokens import LazyTokens, UnsubscribeTokens
from schemas.failures import DeferredFailure, Reason

TOKENS = UnsubscribeTokens(b"k" * 32)
ADA = "ada@example.com"
FORM = {"content-type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


class Store:
    def __init__(self, failure: Exception | None = None) -> None:
        self.added: list[tuple[str, str, str]] = []
        self.failure = failure

    def add(
        self,
        address: str,
        reason: str,
        source: str,
        detail: str = "",
        expires_at: datetime | None = None,
    ) -> None:
        if self.failure is not None:
            raise self.failure
        self.added.append((address, reason, source))


def call(
    store: Store, method: str, token: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    code, payload, _, extra = UnsubscribeEndpoint(TOKENS, store)(
        method, f"/unsubscribe/{token}", headers if headers is not None else FORM, body
    )
    return code, payload, extra


def test_a_one_click_post_suppresses_the_address_of_its_token() -> None:
    store = Store()
    code, page, headers = call(store, "POST", TOKENS.mint(ADA), ONE_CLICK)
    assert code == 200 and b"Unsubscribed" in page and ADA.encode() not in page
    assert store.added == [(ADA, "unsubscribe", "unsubscribe")]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"


def test_a_get_shows_a_form_that_posts_and_changes_nothing() -> None:
    store = Store()
    code, page, headers = call(store, "GET", TOKENS.mint(ADA))
    assert code == 200 and b'method="post"' in page
    assert b'name="List-Unsubscribe" value="One-Click"' in page
    assert ADA.encode() not in page and store.added == []
    assert "form-action 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_token_answers_404_and_changes_nothing(method: str) -> None:
    store = Store()
    token = TOKENS.mint(ADA)
    for fake in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "x", "A" * 140, ""):
        assert call(store, method, fake, ONE_CLICK)[0] == 404
    assert call(store, method, UnsubscribeTokens(b"o" * 32).mint(ADA), ONE_CLICK)[0] == 404
    assert store.added == []


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", FORM),
        (b"List-Unsubscribe=Yes", FORM),
        (b"unsubscribe=One-Click", FORM),
        (b'{"List-Unsubscribe": "One-Click"}', {"content-type": "application/json"}),
    ],
)
def test_a_post_without_the_one_click_body_answers_400(
    body: bytes, headers: dict[str, str]
) -> None:
    store = Store()
    assert call(store, "POST", TOKENS.mint(ADA), body, headers)[0] == 400
    assert store.added == []


def test_a_database_outage_answers_503_with_retry_after() -> None:
    store = Store(DeferredFailure(Reason.DATABASE_UNAVAILABLE, "OperationalError"))
    code, _, headers = call(store, "POST", TOKENS.mint(ADA), ONE_CLICK)
    assert code == 503 and headers["Retry-After"] == "60"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/x-www-form-urlencoded", ONE_CLICK, True),
        ("application/x-www-form-urlencoded", b"a=1&List-Unsubscribe=One-Click", True),
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=One%2DClick", True),
        ("", ONE_CLICK, True),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--XyZ--\r\n",
            True,
        ),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="Other"\r\n\r\n'
            b"One-Click\r\n--XyZ--\r\n",
            False,
        ),
        ("multipart/form-data; boundary=XyZ", b"garbage", False),
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=Two-Click", False),
    ],
)
def test_the_one_click_body_in_each_form_encoding(
    content_type: str, body: bytes, expected: bool
) -> None:
    assert is_one_click({"content-type": content_type}, body) is expected


@settings(deadline=None)  # a loaded shared machine: timing is not what is tested
@given(
    st.binary(max_size=2000),
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "text/plain",
        ]
    ),
)
def test_any_body_is_read_without_raising(body: bytes, content_type: str) -> None:
    assert is_one_click({"content-type": content_type}, body) in (True, False)


def test_a_key_that_cannot_be_loaded_answers_503() -> None:
    def load() -> bytes:
        raise DeferredFailure(Reason.DATABASE_UNAVAILABLE, "OperationalError")

    endpoint = UnsubscribeEndpoint(LazyTokens(load), Store())
    code, _, _, headers = endpoint("POST", "/unsubscribe/abc", FORM, ONE_CLICK)
    assert code == 503 and headers["Retry-After"] == "60"


def test_a_body_past_any_one_click_form_is_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 1 MiB form of tiny parts cost the MIME parser seconds of CPU (the GIL) per POST: a
    # body longer than a one-click form can be is refused before any parser reads it.
    def parse(content_type: str, body: bytes) -> bool:
        raise AssertionError("an oversized body reached the MIME parser")

    monkeypatch.setattr(endpoint_module, "_multipart_one_click", parse)
    part = b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n'
    body = part * (MAX_ONE_CLICK_BODY // len(part) + 1) + b"--b--\r\n"
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    assert is_one_click(multipart, body) is False
    store = Store()
    code, _, _ = call(store, "POST", TOKENS.mint(ADA), body, multipart)
    assert code == 400 and store.added == []
    urlencoded = ONE_CLICK + b"&pad=" + b"x" * MAX_ONE_CLICK_BODY
    assert is_one_click(FORM, urlencoded) is False
