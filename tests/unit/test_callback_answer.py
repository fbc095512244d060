"""The gateway's answer read without ``email.parser`` (``callbacks/answer.py``): for any bytes,
the headers are the ones ``http.client.parse_headers`` gives (names, values, order), and a
whole answer has the same status, framing (chunked, length, close), ``Retry-After`` and body as
``http.client.HTTPResponse`` reads; header parsing is linear in the block's size."""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.callbacks.answer import Answer, header_block, header_lines
from tests.support.growth import assert_linear

_NAMES = [
    *("Content-Length", "content-length", "Transfer-Encoding", "Connection", "Retry-After"),
    *("Keep-Alive", "X-A", "From", "", "Bad Name", "Ümlaut"),
]
_VALUES = [
    *("0", "12", " 7 ", "-3", "x", "chunked", "Chunked ", "close", "keep-alive", "", "120"),
    *("Wed, 21 Oct 2026 07:28:00 GMT", "a:b", "\xe9"),
]
_ENDS = ["\r\n", "\n", "\r", ""]


@st.composite
def header_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["header", "continuation", "from", "colon", "junk", "blank"]))
    end = draw(st.sampled_from(_ENDS))
    if kind == "header":
        name, value = draw(st.sampled_from(_NAMES)), draw(st.sampled_from(_VALUES))
        return f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{value}{end}"
    if kind == "continuation":
        return f"{draw(st.sampled_from([' ', chr(9)]))}{draw(st.sampled_from(_VALUES))}{end}"
    if kind == "from":
        return f"From someone{end}"
    if kind == "colon":
        return f":{draw(st.sampled_from(_VALUES))}{end}"
    if kind == "junk":
        return draw(st.text(st.characters(max_codepoint=255), max_size=12)) + end
    return end or "\r\n"


def block(lines: list[str]) -> bytes:
    return "".join(lines).encode("iso-8859-1")


@settings(max_examples=400, deadline=None)
@given(st.lists(header_line(), max_size=12), st.sampled_from([b"\r\n", b"\n", b""]))
def test_the_headers_are_the_ones_http_client_reads(lines: list[str], end: bytes) -> None:
    data = block(lines) + end + b"body"
    theirs = http.client.parse_headers(io.BytesIO(data))
    ours = header_block(header_lines(io.BytesIO(data)))
    assert ours.items() == theirs.items()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_the_headers_http_client_reads(data: bytes) -> None:
    theirs = http.client.parse_headers(io.BytesIO(data))
    assert header_block(header_lines(io.BytesIO(data))).items() == theirs.items()


class Socket:
    """What ``HTTPResponse`` needs of a socket: ``makefile``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))


def read(cls: type[http.client.HTTPResponse], data: bytes, method: str) -> tuple[Any, ...]:
    response = cls(Socket(data), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
        framing = (response.chunked, response.length, response.will_close)
        body = response.read(1000)
    except (http.client.HTTPException, ValueError) as exc:
        return (type(exc).__name__,)
    return response.status, response.version, framing, response.getheader("Retry-After"), body


_STATUS = [
    *("HTTP/1.1 200 OK", "HTTP/1.0 202 Accepted", "HTTP/1.1 204 No Content", "HTTP/1.1 429"),
    *("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy", "HTTP/2 200 OK", "HTTX/1.1 200"),
]
_BODIES = [b"", b"ok", b"5\r\nhello\r\n0\r\n\r\n", b'{"ok": true}']


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_STATUS),
    st.lists(header_line(), max_size=8),
    st.sampled_from(_BODIES),
    st.sampled_from(["POST", "HEAD"]),
)
def test_a_whole_answer_reads_as_http_client_reads_it(
    status: str, lines: list[str], body: bytes, method: str
) -> None:
    data = f"{status}\r\n".encode() + block(lines) + b"\r\n" + body
    assert read(Answer, data, method) == read(http.client.HTTPResponse, data, method)


def test_a_typical_answer() -> None:
    data = b"HTTP/1.1 429 Too Many\r\nRetry-After: 30\r\nContent-Length: 2\r\n\r\nno"
    assert read(Answer, data, "POST") == (429, 11, (False, 2, False), "30", b"no")


def test_the_limits_are_http_clients() -> None:
    with pytest.raises(http.client.LineTooLong):
        header_lines(io.BytesIO(b"X: " + b"a" * 70000 + b"\r\n"))
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        header_lines(io.BytesIO(b"X: 1\r\n" * 101))


GROWING = {
    "long value": lambda n: [b"X: " + b"a" * n + b"\r\n", b"\r\n"],
    "long name": lambda n: [b"a" * n + b"\r\n", b"\r\n"],
    "many continuations": lambda n: [b"X: 1\r\n"] + [b" more\r\n"] * n + [b"\r\n"],
    "many headers": lambda n: [b"X-A: 1\r\n"] * n + [b"\r\n"],
    "bare carriage returns": lambda n: [b"X: " + b"\r" * n + b"\n", b"\r\n"],
}


@pytest.mark.parametrize("make", GROWING.values(), ids=GROWING.keys())
def test_parsing_is_linear_in_the_block(make: Any) -> None:
    assert_linear(header_block, make)
