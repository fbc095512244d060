"""The fuzz targets: for each parser of ours, a strategy of hostile inputs and the property that
must hold for all of them. A property raises ``AssertionError`` (or any unexpected exception)
when it does not hold."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from email_worker.callbacks.url_policy import host_allowed, parse_url
from email_worker.logs import scrub
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.render.headers import check_header_value, header_line, unsafe_reason
from email_worker.render.mime import build_message
from email_worker.render.renderer import TemplateRenderer
from email_worker.render.sizes import brace_width, percent_width
from email_worker.render.textify import html_to_text
from email_worker.reports.dsn import mime_reports
from email_worker.reports.model import Malformed
from schemas.failures import PermanentFailure, Reason
from schemas.inbound import parse_message, peek_ids
from templates_client.template import Template


@dataclass(frozen=True)
class Target:
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def _mixed(alphabet: str, *, max_size: int = 2000) -> st.SearchStrategy[str]:
    """Text drawn mostly from ``alphabet`` (the characters a parser cares about), with long
    runs and any character now and then."""
    pieces = st.one_of(
        st.text(st.sampled_from(alphabet), max_size=40),
        st.builds(lambda c, n: c * n, st.sampled_from(alphabet), st.integers(0, 400)),
        st.text(max_size=5),
    )
    return st.lists(pieces, max_size=30).map("".join).map(lambda s: s[:max_size])


# html → text: never raises, never leaks its internal marks, no trailing space on a line.
def _check_html(html: str) -> None:
    text = html_to_text(html)
    assert "\x00" not in text and "\x01" not in text  # its own break marks, all replaced
    assert text == text.strip()


# Header values: refused, or folded into lines of at most 998 octets that read back as given.
def _check_header(value: str) -> None:
    try:
        check_header_value("Subject", value)
    except PermanentFailure as refused:
        assert refused.reason is Reason.UNSAFE_CONTENT
        assert unsafe_reason(value) is not None
        return
    for utf8 in (False, True):
        line = header_line("Subject", value, utf8=utf8)
        assert all(len(part.encode("utf-8")) <= 998 for part in line.split("\r\n"))
        parsed = email.message_from_string(line + "\r\n\r\n", policy=email.policy.default)
        assert parsed["Subject"].strip(" ") == value.strip(" ")  # readers may trim the ends


# A whole message: every line within 998 octets, whatever the subject and unsubscribe URL.
def _check_message(values: tuple[str, str]) -> None:
    subject, unsubscribe = values
    content = RenderedEmail(subject.strip(), "<p>x</p>", "x", "t", "v1", unsubscribe or None)
    outgoing = OutgoingEmail("notify@acme.test", "ann@example.test", "<1@acme.test>", content)
    try:
        wire = build_message(outgoing)
    except PermanentFailure as refused:
        assert refused.reason is Reason.UNSAFE_CONTENT
        return
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998


# Log scrubbing: idempotent, and no "local@" of a planted address survives.
def _check_scrub(values: tuple[str, str]) -> None:
    text, local = values
    planted = f"{text} {local}@example.com {text}"
    once = scrub(planted)
    assert scrub(once) == once
    assert f" {local}@example.com" not in once


# URLs: never raise; an allowed URL parses, and its host is what the allow-list named.
def _check_url(url: str) -> None:
    allowed = host_allowed(url, ["hooks.example.com", "*.example.org", "10.0.0.1"])
    parsed = parse_url(url)
    if allowed:
        assert parsed is not None
        assert parsed.host in ("hooks.example.com", "10.0.0.1") or parsed.host.endswith(
            ".example.org"
        )


# Inbound messages: only our own refusals, and peeking never raises.
def _check_inbound(body: bytes) -> None:
    peek_ids(body)
    with contextlib.suppress(PermanentFailure):
        parse_message(body)


# Format estimates: an upper bound of what formatting really builds.
def _check_formats(fmt: str) -> None:
    widest = percent_width(fmt)
    try:
        result = fmt % (("",) * fmt.count("%")) if "%(" not in fmt else fmt % {}
    except (TypeError, ValueError, KeyError, OverflowError, MemoryError):
        result = ""
    assert len(result) <= len(fmt) + max(widest, 20) * (fmt.count("%") + 1)
    brace_width(fmt)


# Raw bounce and complaint reports (anyone can mail the bounce mailbox): reports or
# Malformed, never anything else, and no address in what a report carries onwards.
def _check_mime_report(raw: bytes) -> None:
    try:
        reports = mime_reports(raw)
    except Malformed:
        return
    assert all("@" not in report.summary.replace("***@", "") for report in reports)


# Templates: rendered, or refused as the template's fault, never anything else; and never more
# than a bounded amount of memory on the way (the allowance is 32 x 64 KiB here).
_RENDERER = TemplateRenderer(max_rendered_bytes=64 * 1024, max_render_seconds=0.2)
_REPORT_PIECES = (
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"Content-Type: message/delivery-status\r\n\r\n",
    b"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n",
    b"Content-Type: message/rfc822\r\n\r\nMessage-ID: <a@b>\r\n",
    b"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: <a@b>\r\n",
    b"Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n",
    b"Diagnostic-Code: smtp; 550 <ann@example.org> unknown\r\n",
    b"\r\n",
    b'; boundary="',
    b"\xff",
    b"\t",
)
_PIECES = (
    """
{{ x }}|{{ xs }}|{{ xs * 50 }}|{{ [xs, xs] }}|{% for i in xs %}|{% endfor %}|{{ x|center(500) }}
{{ '%5s' % x }}|{{ xs|join(x) }}|{{ (xs|list) + xs }}|{% set xs = [xs, xs, xs, xs] %}|{{ x ~ x }}
{{ 9 ** 99 }}|{{ xs|tojson }}|{{ range(1000)|list }}|{% if x %}|{% endif %}|<a href='{{ x }}'>
{{ x|e }}|{{ xs|pprint }}|{% for i in range(900) %}|{{ loop.index }}|{{ '{:>9}'.format(x) }}
{% set x = x ~ x %}|{% set x = x * 3 %}|{{ x.center(99999999) }}|{{ (x|e).ljust(99999999) }}
{{ x.encode() * 99999 }}|{{ x.translate({97: x * 999}) }}|{{ xs|slice(9999999)|list }}
{{ xs|batch(9999999, x)|list }}|{% set xs = xs + xs %}|{{ xs|map('center', 9999)|list }}
{% macro m(a) %}{{ a ~ a }}{% endmacro %}|{{ m(x) }}|{% set ns = namespace(v=xs) %}
{% set ns.v = [ns.v, ns.v] %}|{{ ns }}|{{ x|indent(999) }}|{{ x|wordwrap(1, wrapstring=x) }}
""".strip()
    .replace("\n", "|")
    .split("|")
)


def _check_template(source: str) -> None:
    template = Template("fuzz", None, "s", source, None, "v1")
    tracemalloc.start()
    try:
        _RENDERER.render(template, {"x": "ab", "xs": [1, "two", [3]]})
    except PermanentFailure as refused:
        assert refused.reason in (Reason.TEMPLATE_ERROR, Reason.UNSAFE_CONTENT), refused
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated at the peak"


_URL_PARTS = "http:// https:// @ : / [ ] %2e ß # ? \\ 0x7f . xn-- 80 ::1 localhost 10.0.0.1"
_URL_HOSTS = "hooks.example.com a.example.org"
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
_MESSAGE_KEYS = st.sampled_from(
    ["request_id", "template_code", "to", "email", "variables", "data", "pattern", "success"]
)

TARGETS: dict[str, Target] = {
    "html_to_text": Target(_mixed("<>/!-=\"'&;#ab \n\tpr", max_size=4000), _check_html),
    "header": Target(_mixed("a =?é\r\n\t ", max_size=1200), _check_header),
    "message": Target(
        st.tuples(_mixed("ab é", max_size=1100), _mixed("<https://u.test/a>, ", max_size=1100)),
        _check_message,
    ),
    "log_scrub": Target(
        st.tuples(_mixed("a.@:/ä-+", max_size=800), st.text(st.sampled_from("aä.+_-"), min_size=1)),
        _check_scrub,
    ),
    "url": Target(
        st.lists(st.sampled_from(f"{_URL_PARTS} {_URL_HOSTS}".split(" ")), max_size=12).map(
            "".join
        ),
        _check_url,
    ),
    "inbound": Target(
        st.one_of(
            st.dictionaries(_MESSAGE_KEYS, _JSONISH).map(lambda d: json.dumps(d).encode()),
            st.binary(max_size=300),
            _mixed('{}[]":,\\u0 ', max_size=600).map(lambda s: s.encode("utf-8", "replace")),
        ),
        _check_inbound,
    ),
    "formats": Target(_mixed("%()*.0123456789-+ #sdrf{}:>", max_size=300), _check_formats),
    "mime_report": Target(
        st.lists(st.sampled_from(_REPORT_PIECES), max_size=40).map(b"".join), _check_mime_report
    ),
    "template": Target(
        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join), _check_template
    ),
}
