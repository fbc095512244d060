"""Unit tests of templates_client.fetch: capped reading, strict decoding, path templates and the
classification of every kind of answer (httpx.MockTransport, no network)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from schemas.failures import (
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
)
from templates_client.client import REASONS, check_template_path
from templates_client.fetch import (
    ResponseTooLarge,
    check_path,
    decode_answer,
    fetch_answer,
    fill_path,
    read_capped,
)


def _streamed(chunks: list[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    def body() -> Iterator[bytes]:
        yield from chunks

    return httpx.Response(200, headers=headers, content=body())


def test_read_capped_reads_bodies_within_the_cap() -> None:
    assert read_capped(httpx.Response(200, content=b'{"a": 1}'), 8) == b'{"a": 1}'
    assert read_capped(_streamed([b'{"a"', b": [1, 2]}"]), 100) == b'{"a": [1, 2]}'


def test_read_capped_refuses_bodies_over_the_cap() -> None:
    with pytest.raises(ResponseTooLarge):
        read_capped(httpx.Response(200, content=b'{"a": 12}'), 8)
    with pytest.raises(ResponseTooLarge):
        read_capped(_streamed([b"[1,", b"2,", b"3]"]), 4)


def test_read_capped_trusts_a_declared_length_over_the_cap_without_reading() -> None:
    def never() -> Iterator[bytes]:
        raise AssertionError("the body must not be read")
        yield b""

    response = httpx.Response(200, headers={"Content-Length": "5000"}, content=never())
    with pytest.raises(ResponseTooLarge):
        read_capped(response, 100)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "Expecting value"),
        (b"not json", "Expecting value"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting"),
        (b'{"subject": "\\ud800"}', "surrogate"),
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": NaN}', "NaN"),
    ],
)
def test_decode_answer_classifies_what_json_loads_would_let_escape(
    body: bytes, detail: str
) -> None:
    with pytest.raises(PermanentFailure) as caught:
        decode_answer(body, Reason.TEMPLATE_INVALID)
    assert caught.value.reason is Reason.TEMPLATE_INVALID
    assert detail in caught.value.detail


def _client(reply: httpx.Response | Exception) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(reply, Exception):
            raise reply
        return reply

    return httpx.Client(transport=httpx.MockTransport(handler))


def _get(reply: httpx.Response | Exception) -> object:
    return fetch_answer(_client(reply), "http://svc.test/x", REASONS, max_bytes=64)


def test_a_2xx_answer_is_returned_whole() -> None:
    answer = {"success": True, "data": {"a": 1}}
    assert _get(httpx.Response(200, json=answer)) == answer
    assert _get(httpx.Response(203, json=[1])) == [1]


@pytest.mark.parametrize(
    ("reply", "kind", "reason", "detail"),
    [
        (httpx.Response(404), PermanentFailure, Reason.TEMPLATE_NOT_FOUND, "404"),
        (httpx.Response(400), PermanentFailure, Reason.TEMPLATE_ERROR, "HTTP 400"),
        (httpx.Response(410), PermanentFailure, Reason.TEMPLATE_ERROR, "HTTP 410"),
        (httpx.Response(422), PermanentFailure, Reason.TEMPLATE_ERROR, "HTTP 422"),
        (httpx.Response(200, content=b"<html>"), PermanentFailure, Reason.TEMPLATE_INVALID, "JSON"),
        (
            httpx.Response(200, content=b"[" + b"1," * 100 + b"1]"),
            PermanentFailure,
            Reason.TEMPLATE_INVALID,
            "too large",
        ),
        (httpx.Response(401), SystemicFailure, Reason.TEMPLATE_SERVICE_UNAUTHORIZED, "401"),
        (httpx.Response(403), SystemicFailure, Reason.TEMPLATE_SERVICE_UNAUTHORIZED, "403"),
        (httpx.Response(500), TransientFailure, Reason.TEMPLATE_SERVICE_UNAVAILABLE, "HTTP 500"),
        (httpx.Response(503), TransientFailure, Reason.TEMPLATE_SERVICE_UNAVAILABLE, "HTTP 503"),
        (httpx.Response(408), TransientFailure, Reason.TEMPLATE_SERVICE_UNAVAILABLE, "HTTP 408"),
        (httpx.Response(425), TransientFailure, Reason.TEMPLATE_SERVICE_UNAVAILABLE, "HTTP 425"),
        (httpx.Response(429), TransientFailure, Reason.TEMPLATE_SERVICE_UNAVAILABLE, "HTTP 429"),
        (
            httpx.Response(302, headers={"Location": "http://169.254.169.254/"}),
            TransientFailure,
            Reason.TEMPLATE_SERVICE_UNAVAILABLE,
            "redirect",
        ),
        (
            httpx.ConnectError("refused"),
            TransientFailure,
            Reason.TEMPLATE_SERVICE_UNAVAILABLE,
            "connection failed",
        ),
        (
            httpx.ReadTimeout("slow"),
            TransientFailure,
            Reason.TEMPLATE_SERVICE_UNAVAILABLE,
            "timeout",
        ),
    ],
)
def test_every_answer_is_classified(
    reply: httpx.Response | Exception, kind: type[Exception], reason: Reason, detail: str
) -> None:
    with pytest.raises(kind) as caught:
        _get(reply)
    failure = caught.value
    assert isinstance(failure, PermanentFailure | TransientFailure)
    assert type(failure) is kind  # a 5xx is not a deferral, a 4xx not a pause
    assert failure.reason is reason
    assert detail in failure.detail
    assert "svc.test" not in failure.detail
    assert isinstance(failure, DeferredFailure) == (kind is SystemicFailure)


def test_fill_path_percent_encodes_every_value() -> None:
    path = "/t/{language}/{template_code}?x={{literal}}"
    filled = fill_path(path, template_code="../a b?c#d", language="pt-BR")
    assert filled == "/t/pt-BR/..%2Fa%20b%3Fc%23d?x={literal}"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/templates/{template_code}",
        "/templates?code={template_code}&lang={language}",
        "/t/{language}/{template_code}",
    ],
)
def test_usable_template_paths(path: str) -> None:
    assert check_template_path(path) == path


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("api/v1/templates/{template_code}", "start with '/'"),
        ("/api/v1/templates/{code}", "unknown placeholder {code}"),
        ("/api/v1/templates/{language}", "must use the placeholder {template_code}"),
        ("/api/v1/templates/{template_code!r}", "unknown placeholder"),
        ("/api/v1/templates/{template_code:>9}", "unknown placeholder"),
        ("/api/v1/templates/{}", "unknown placeholder {}"),
        ("/api/v1/templates/{template_code", "brace"),
        ("/api/v1/templates/{template_code}#x", "'#'"),
        ("/api/v1/templates/ {template_code}", "whitespace"),
    ],
)
def test_unusable_template_paths_say_why(path: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_template_path(path)
    assert complaint in str(caught.value)


def test_user_path_needs_the_user_id() -> None:
    assert check_path("/u/{user_id}", ("user_id",), "user_id") == "/u/{user_id}"
    with pytest.raises(ValueError, match="user_id"):
        check_path("/u/{template_code}", ("user_id",), "user_id")
