"""Every parser of ours runs in linear time on any input (RELIABILITY rule 19), shown by timing
growing inputs (n, 2n, 4n, 8n: ``tests.support.growth``), never one fixed size. The shapes are
the ones that make regular expressions and naive loops backtrack or rescan: long runs of what a
pattern could match in two ways, openers that are never closed, nesting."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from jinja2 import TemplateError

from email_worker.callbacks.url_policy import host_allowed
from email_worker.logs import scrub
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.relays.urls import parse_relays, split_urls
from email_worker.render.budget import measure
from email_worker.render.headers import check_header_value, header_line
from email_worker.render.mime import build_message, is_bare_address
from email_worker.render.sandbox import GuardedEnvironment
from email_worker.render.sizes import brace_width, percent_width
from email_worker.render.textify import html_to_text
from email_worker.smtp.wire import accepted_reply
from schemas.failures import PermanentFailure
from schemas.inbound import parse_message, peek_ids
from tests.support.growth import assert_linear


def _quietly(parse: Callable[[Any], object]) -> Callable[[Any], object]:
    """``parse``, with the refusals a hostile input earns counted as a normal end."""

    def run(value: Any) -> object:
        try:
            return parse(value)
        except (PermanentFailure, ValueError, TemplateError):
            return None

    return run


HTML: dict[str, Callable[[int], str]] = {
    "breaks and paragraphs": lambda n: "<br> <p>x " * n,
    "tag name then letters": lambda n: "<a" + "b" * n,  # backtracked: 16 KB took 10 s
    "unclosed quote": lambda n: "<a href='" + "x" * n,
    "many quotes": lambda n: '<a x="' * n,
    "nested links": lambda n: "<a href=x>y" * n + "</a>" * n,
    "openers": lambda n: "<a<a" * n,
    "comments": lambda n: "<!--" * n,
    "declarations": lambda n: "<!x" * n,
    "scripts": lambda n: "<script>" * n,
    "closed styles": lambda n: "<style>p{}</style>x" * n,  # each skipped by position
    "styles hiding their end in a comment": lambda n: "<style><!--</style>x" * n,
    "entities": lambda n: "&amp;&#x41;&bogus" * n,
    "text": lambda n: "<p>word " * n,
}


@pytest.mark.parametrize("make", HTML.values(), ids=HTML.keys())
def test_html_to_text(make: Callable[[int], str]) -> None:
    assert_linear(html_to_text, make)


def test_html_to_text_on_a_long_run_of_line_breaks() -> None:
    # The break-collapsing regex was quadratic here with a small constant (65,000 breaks took
    # 14.7 s): from 8,192 breaks up the quadratic term dominates the linear tag parsing.
    assert_linear(html_to_text, lambda n: "<br>" * n, start=8192)


def _email(subject: str = "Hi", body: str = "x") -> OutgoingEmail:
    content = RenderedEmail(subject, body, body, "welcome", "v1")
    return OutgoingEmail("notify@acme.test", "ann@example.test", "<1@acme.test>", content)


HEADERS: dict[str, tuple[Callable[[Any], object], Callable[[int], Any]]] = {
    "fold words": (lambda v: header_line("Subject", v), lambda n: "word " * n),
    "fold one long word": (lambda v: header_line("Subject", v), lambda n: "x" * n),
    "fold non-ASCII": (lambda v: header_line("Subject", v), lambda n: "é ü" * n),
    "fold UTF-8": (lambda v: header_line("Subject", v, utf8=True), lambda n: "é ü " * n),
    "check clean": (lambda v: check_header_value("S", v, max_length=len(v)), lambda n: "a" * n),
    "check near-openers": (
        lambda v: check_header_value("S", v, max_length=len(v)),
        lambda n: "=" * n + "?",
    ),
    "message bodies": (build_message, lambda n: _email(body="line with words\n" * n)),
    # One long line: quoted-printable cut into pieces, every "=" an escape at any cut.
    "a body of one long line": (build_message, lambda n: _email(body="<a href=x>" * n)),
    "a long line of '='": (build_message, lambda n: _email(body="=" * n)),
    "long lines ending in spaces": (build_message, lambda n: _email(body=("x" * 1000 + " \n") * n)),
    "bare address": (is_bare_address, lambda n: "a" * n + "@" + "b" * n),
    "bare address, many @": (is_bare_address, lambda n: "a@" * n),
}


@pytest.mark.parametrize(("run", "make"), HEADERS.values(), ids=HEADERS.keys())
def test_header_building(run: Callable[[Any], object], make: Callable[[int], Any]) -> None:
    assert_linear(_quietly(run), make)


# Each text holds an "@" (a text without one is returned untouched, in one ``in`` test).
SCRUB: dict[str, Callable[[int], str]] = {
    "local part without @": lambda n: "@ " + "a" * n,  # "[atext]+@" retried at every position
    "dots": lambda n: "@ " + "a." * n,
    "many @": lambda n: "a@" * n,
    "addresses": lambda n: "ada@example.com " * n,
    "non-ASCII": lambda n: "@ " + "ä" * n,
    "URL passwords": lambda n: "://a:" * n + "@",
    "URL password without @": lambda n: "@ ://a:" + "b" * n,
}


@pytest.mark.parametrize("make", SCRUB.values(), ids=SCRUB.keys())
def test_log_scrubbing(make: Callable[[int], str]) -> None:
    assert_linear(scrub, make)


REPLIES: dict[str, Callable[[int], bytes]] = {
    "one long word without @": lambda n: b"queued " + b"a" * n,
    "many @": lambda n: b"@" * n,
    "words with @": lambda n: b"a@b " * n,
}


@pytest.mark.parametrize("make", REPLIES.values(), ids=REPLIES.keys())
def test_relay_reply_masking(make: Callable[[int], bytes]) -> None:
    assert_linear(lambda reply: accepted_reply(250, reply), make)


_ENV = GuardedEnvironment(limit=1 << 30, autoescape=True)
TEMPLATES: dict[str, tuple[Callable[[Any], object], Callable[[int], Any]]] = {
    "percent keys never closed": (percent_width, lambda n: "%(" * n),
    "percent nested keys": (percent_width, lambda n: "%(" + "(" * n),
    "percent specs": (percent_width, lambda n: "%-08.3f" * n),
    "brace specs": (brace_width, lambda n: "{:" * n),
    "brace fields": (brace_width, lambda n: "{0:>5}" * n),
    "measure a list": (lambda v: measure(v, 1 << 60), lambda n: [[1, "ab"]] * n),
    "lex unclosed comment": (_ENV.checked_template, lambda n: "{# " + "x" * n),
    "lex unclosed string": (_ENV.checked_template, lambda n: "{{ '" + "a" * n),
    "lex data": (_ENV.checked_template, lambda n: "<p>text</p>" * n),
}


@pytest.mark.parametrize(("run", "make"), TEMPLATES.values(), ids=TEMPLATES.keys())
def test_template_checks(run: Callable[[Any], object], make: Callable[[int], Any]) -> None:
    assert_linear(_quietly(run), make)


def _message(**extra: Any) -> bytes:
    body = {"request_id": "r-1", "template_code": "welcome", "to": "ann@example.com", **extra}
    return json.dumps(body).encode()


MESSAGES: dict[str, tuple[Callable[[Any], object], Callable[[int], Any]]] = {
    "long variable": (
        lambda b: parse_message(b, max_bytes=1 << 30),
        lambda n: _message(variables={"x": "a" * n}),
    ),
    "many variables": (
        lambda b: parse_message(b, max_bytes=1 << 30),
        lambda n: _message(variables={f"k{i}": i for i in range(n)}),
    ),
    "escapes": (
        lambda b: parse_message(b, max_bytes=1 << 30),
        lambda n: _message(variables={"x": "\u00e9\n\\" * n}),
    ),
    "peek truncated": (peek_ids, lambda n: b'{"request_id": "r", "x": "' + b"a" * n),
    "peek many keys": (peek_ids, lambda n: b'{"request_id": ' * n),
    "URL host labels": (
        lambda u: host_allowed(u, ["*.example.com"]),
        lambda n: "http://" + "a." * n + "example.com/",
    ),
    "URL path": (lambda u: host_allowed(u, ["a.test"]), lambda n: "http://a.test/" + "%" * n),
    "URL authority @": (lambda u: host_allowed(u, ["a.test"]), lambda n: "http://" + "a" * n),
}


@pytest.mark.parametrize(("run", "make"), MESSAGES.values(), ids=MESSAGES.keys())
def test_inbound_parsers(run: Callable[[Any], object], make: Callable[[int], Any]) -> None:
    assert_linear(_quietly(run), make)


RELAYS: dict[str, Callable[[int], str]] = {
    "commas in a password": lambda n: "smtp://u:" + ",x" * n + "@h:25",
    "empty items": lambda n: "smtp://h:25" + ", " * n,
    "schemes never closed": lambda n: "smtp:/" * n,
    "long password": lambda n: "smtp://u:" + "%41" * n + "@h:25",
    "long host": lambda n: "smtp://" + "a." * n + "b:25",
    "query": lambda n: "smtp://h:25?" + "weight=1&" * n,
}


@pytest.mark.parametrize("make", RELAYS.values(), ids=RELAYS.keys())
def test_relay_urls(make: Callable[[int], str]) -> None:
    assert_linear(_quietly(split_urls), make)
    # Without the length cap (RELAYS is at most 16 KiB), to see the shape of the parse itself.
    assert_linear(_quietly(lambda text: parse_relays(text, max_length=1 << 30)), make)
