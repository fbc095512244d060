"""The body parts of the outgoing message (``render.mime``): 7bit as they are when they can be
(ASCII without controls, lines of at most 998 octets), else quoted-printable; either way every
line fits and a MIME reader gets back exactly the text, its line ends as CRLF. The headers'
folding is in ``test_headers.py``."""

from __future__ import annotations

import binascii
import email
import email.policy
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.render import mime
from email_worker.render.mime import build_message

_PIECES = st.sampled_from(["=", " ", "\t", "\n", "\r\n", "\r", ".", "=3D", "é", "\x00", "\x7f"])
_TEXT = st.lists(
    st.one_of(
        _PIECES,
        st.text(st.sampled_from("ab= \t."), max_size=80),
        st.builds(lambda c, n: c * n, st.sampled_from("x= \t"), st.integers(70, 1200)),
        st.text(max_size=20),
    ),
    max_size=30,
).map("".join)


def _email(text: str, html: str) -> OutgoingEmail:
    content = RenderedEmail("Hi", html, text, "welcome", "v1")
    return OutgoingEmail("notify@acme.test", "ann@example.test", "<1@acme.test>", content)


def _parts(wire: bytes) -> list[EmailMessage]:
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return list(parsed.iter_parts())  # type: ignore[arg-type]


def _expected(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    return lines.replace("\n", "\r\n").encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(text=_TEXT, html=_TEXT)
def test_every_body_reads_back_exactly_and_every_line_fits(text: str, html: str) -> None:
    wire = build_message(_email(text, html))

    lines = wire.split(b"\r\n")
    assert max(len(line) for line in lines) <= mime.MAX_LINE
    assert b"\n" not in wire.replace(b"\r\n", b"") and b"\r" not in wire.replace(b"\r\n", b"")
    for part, source in zip(_parts(wire), (text, html), strict=True):
        assert part.get_payload(decode=True) == _expected(source)
        plain = _expected(source).isascii() and all(
            c in "\t\r\n" or " " <= c <= "~" for c in source
        )
        short = max(len(line) for line in _expected(source).split(b"\r\n")) <= mime.MAX_LINE
        expected_encoding = "7bit" if plain and short else "quoted-printable"
        assert part["Content-Transfer-Encoding"] == expected_encoding


@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from("ab= \t.\n"), max_size=2000))
def test_the_fast_quoted_printable_decodes_back_in_lines_of_76(text: str) -> None:
    data = text.encode("ascii")

    encoded = mime._quoted_printable(data)

    assert binascii.a2b_qp(encoded) == data.replace(b"\n", b"\r\n")
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76
        assert not line.endswith((b" ", b"\t"))  # trailing whitespace would be lost


def test_a_long_html_line_is_quoted_printable_and_a_short_text_7bit() -> None:
    html = '<p class="x">' + "word " * 300 + "</p>"  # one line of 1,517 characters

    parts = _parts(build_message(_email("Hello\nworld", html)))

    assert [p["Content-Transfer-Encoding"] for p in parts] == ["7bit", "quoted-printable"]
    assert parts[1].get_content().rstrip("\n") == html
