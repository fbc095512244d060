"""Rendering in the guarded sandbox, and HTML-to-text."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from email_worker.render.renderer import TemplateRenderer
from email_worker.render.sandbox import MAX_TEMPLATE_TOKENS
from email_worker.render.textify import html_to_text
from schemas.failures import PermanentFailure, Reason
from templates_client.template import Template


def _template(
    html: str = "<p>Hello {{ name }}</p>",
    subject: str = "Welcome",
    text: str | None = None,
    version: str = "v1",
    unsubscribe: str | None = None,
) -> Template:
    return Template("welcome", "en", subject, html, text, version, unsubscribe)


def _fails(template: Template, variables: dict[str, object], **kwargs: Any) -> PermanentFailure:
    with pytest.raises(PermanentFailure) as caught:
        TemplateRenderer(**kwargs).render(template, variables)
    return caught.value


def test_html_is_autoescaped_but_subject_and_text_are_not() -> None:
    template = _template(text="Hi {{ name }}", subject="For {{ name }}")

    email = TemplateRenderer().render(template, {"name": "<b>Tom & Jerry</b>"})

    assert email.html == "<p>Hello &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert email.text == "Hi <b>Tom & Jerry</b>"
    assert email.subject == "For <b>Tom & Jerry</b>"
    assert (email.template_code, email.template_version) == ("welcome", "v1")


def test_variables_are_data_never_template_source() -> None:
    email = TemplateRenderer().render(_template(), {"name": "{{ 7*7 }}{% raw %}"})

    assert email.html == "<p>Hello {{ 7*7 }}{% raw %}</p>"


def test_text_is_derived_from_html_when_the_template_has_none() -> None:
    template = _template(html="<h1>Hi {{ name }}</h1><p>Go <a href='{{ link }}'>here</a></p>")

    email = TemplateRenderer().render(template, {"name": "Ann", "link": "https://a.test/x"})

    assert email.text == "Hi Ann\n\nGo here (https://a.test/x)"


def test_subject_is_trimmed_and_list_unsubscribe_rendered() -> None:
    template = _template(subject="  Hi {{ name }}\n", unsubscribe=" <{{ link }}> ")

    email = TemplateRenderer().render(template, {"name": "Ann", "link": "https://a.test/u"})

    assert email.subject == "Hi Ann"
    assert email.list_unsubscribe == "<https://a.test/u>"


@pytest.mark.parametrize(
    ("subject", "unsubscribe", "value"),
    [
        ("Hi {{ name }} today", None, "Bob\r\nBcc: evil@x.test"),
        ("Hi {{ name }} today", None, "=?utf-8?q?Bcc=3A_evil@x.test?="),
        ("Hi {{ name }} today", None, "Bob\u2028Bcc: evil@x.test"),
        ("Hi", "<{{ name }}>", "https://a.test\r\nBcc: evil@x.test"),
    ],
)
def test_header_injection_through_variables_is_unsafe_content(
    subject: str, unsubscribe: str | None, value: str
) -> None:
    failure = _fails(_template(subject=subject, unsubscribe=unsubscribe), {"name": value})

    assert failure.reason is Reason.UNSAFE_CONTENT
    assert "evil" not in failure.detail


def test_missing_variable_names_it_and_the_line() -> None:
    failure = _fails(_template(html="<p>\n{{ missing_thing }}</p>"), {})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert failure.detail == "missing variable 'missing_thing' (html line 2)"


def test_undefined_key_that_is_user_data_is_not_echoed() -> None:
    failure = _fails(_template(html="{{ people[name] }}"), {"people": {}, "name": "ann@x.test"})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert "ann" not in failure.detail


def test_syntax_error_reports_part_and_line() -> None:
    failure = _fails(_template(html="ok\nok\n{{ name }"), {"name": "x"})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert failure.detail.startswith("syntax error in html at line 3")


def test_runtime_error_keeps_only_the_type_never_the_value() -> None:
    failure = _fails(_template(html="{{ name|int(base=2) + (1 / 0) }}"), {"name": "ann@x.test"})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert "ZeroDivisionError" in failure.detail and "ann" not in failure.detail


@pytest.mark.parametrize(
    "html",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ name.__class__.__base__.__subclasses__() }}",
        "{{ {}.update(a=1) }}",  # immutable sandbox: no mutation of builtins
        "{{ ''.format.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_unsafe_template_operations(html: str) -> None:
    failure = _fails(_template(html=html), {"name": "x"})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert failure.detail.startswith("unsafe template operation")


@pytest.mark.parametrize(
    "html",
    [
        "{{ 'a' * 10**9 }}",
        "{{ [1] * 10**9 }}",
        "{{ 7 ** 100000000 }}",
        "{% set a = 'x' * 900000 %}{{ a ~ a }}",
        "{% set a = 'x' * 900000 %}{% set b = a + a %}{{ b|length }}",
        "{% set a = 'x' * 10000 %}{% set b %}{% for i in range(1000) %}{{ a }}{% endfor %}"
        "{% endset %}{{ b|length }}",
        "{{ range(100000)|join('a' * 100000) }}",
        "{{ 'aaaa'|replace('a', 'b' * 1000000) }}",
        "{{ ('x\n' * 400000)|indent(100) }}",
        "{{ 'a'|center(10**9) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ ('a\t' * 100000).expandtabs(10**6) }}",
        "{{ ('a' * 100000).join(range(100000)) }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '%1000000000s' % 'a' }}",
        "{{ '%1000000000s'|format('a') }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}xx{% endfor %}{% endfor %}",
    ],
)
def test_memory_bombs_are_refused_quickly(html: str) -> None:
    started = time.monotonic()

    failure = _fails(_template(html=html), {})

    assert failure.reason is Reason.TEMPLATE_ERROR
    assert failure.detail.startswith("rendered body too large"), failure.detail
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "html",
    [
        "{{ ('a' * 5000)|length }}",
        "{{ ([1] * 5000)|length }}",
        "{{ (7 ** 5000) > 1 }}",
        "{% set a = 'x' * 600 %}{{ (a ~ a)|length }}",
        "{% set a = 'x' * 600 %}{{ (a + a)|length }}",
        "{% set b %}{% for i in range(600) %}xx{% endfor %}{% endset %}{{ b|length }}",
        "{{ range(600)|join('ab')|length }}",
        "{{ 'aaa'|replace('a', 'b' * 500)|length }}",
        "{{ ('x\n' * 100)|indent(20)|length }}",
        "{{ 'a'|center(5000)|length }}",
        "{{ 'a'.rjust(5000)|length }}",
        "{{ ('\t' * 10).expandtabs(500)|length }}",
        "{{ 'ab'.join(['x'] * 600)|length }}",
        "{{ '{:>5000}'.format(1)|length }}",
        "{{ '{:{}}'.format(1, 5000)|length }}",
        "{{ ('%5000s' % 'a')|length }}",
        "{{ ('%*s' % (5000, 'a'))|length }}",
        "{{ '%5000s'|format('a')|length }}",
        "{{ range(5000)|list|length }}",  # any other oversized result, checked after the call
    ],
)
def test_guard_refuses_oversized_values_that_are_never_output(html: str) -> None:
    # A 1 KiB cap and tiny outputs: only the sandbox guard, not the streaming cap, can refuse.
    failure = _fails(_template(html=html), {}, max_rendered_bytes=1024)

    assert failure.detail.startswith("rendered body too large"), failure.detail


def test_output_just_under_the_cap_renders() -> None:
    html = "{{ 'a' * 2000 }}{% for i in range(10) %}{{ '%-5s'|format(i) }}{% endfor %}"

    email = TemplateRenderer(max_rendered_bytes=2050).render(_template(html=html), {})

    assert len(email.html) == 2050


def test_cap_counts_utf8_bytes() -> None:
    failure = _fails(_template(html="{{ name }}"), {"name": "é" * 600}, max_rendered_bytes=1024)

    assert failure.detail == "rendered body too large (html)"


def test_lipsum_is_not_available() -> None:
    failure = _fails(_template(html="{{ lipsum(10**6) }}"), {})

    assert failure.detail.startswith("missing variable 'lipsum'")


def test_compiled_templates_are_cached_by_code_language_version_and_part() -> None:
    renderer = TemplateRenderer(cache_size=8)

    renderer.render(_template(), {"name": "a"})  # subject + html: 2 misses
    renderer.render(_template(), {"name": "b"})  # 2 hits
    changed = renderer.render(_template(html="<i>{{ name }}</i>"), {"name": "c"})  # same version!
    renderer.render(_template(version="v2"), {"name": "d"})

    assert changed.html == "<i>c</i>"  # new source under an old version is recompiled
    info = renderer.cache_info()
    assert (info.hits, info.misses) == (2 + 1, 2 + 1 + 2)
    assert info.size == 4


def test_cache_is_bounded() -> None:
    renderer = TemplateRenderer(cache_size=3)

    for version in range(5):
        renderer.render(_template(version=str(version)), {"name": "a"})

    assert renderer.cache_info().size == 3


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<ul><li>x</li><li>y</li></ul>", "- x\n- y"),
        ("<a href='https://a.test'>Site</a>", "Site (https://a.test)"),
        ("<a href='https://a.test'>https://a.test</a>", "https://a.test"),
        ("<a href='#top'>Top</a>", "Top"),
        ("<head><title>T</title><style>p{}</style></head><script>x()</script>Body", "Body"),
        ("Tom &amp; Jerry&nbsp;&lt;3 &#233;", "Tom & Jerry <3 é"),
        ("  lots \n\n of   space  ", "lots of space"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("<table><tr><td>A</td><td>B</td></tr></table>", "A B"),
        ("<p>unclosed <b>tags", "unclosed tags"),
        ("<script>if (a<b) { x('</p>') }</script>After", "After"),
        ("<img alt='a > b'>x < y &amp; <3", "x < y & <3"),
        ("<A HREF=https://u.test/x?a=1&amp;b=2>Go</A>", "Go (https://u.test/x?a=1&b=2)"),
        ("<!DOCTYPE html><!-- hidden <p> --><P>Shown</P>", "Shown"),
        ("<a<a<a", "<a<a<a"),
        ("<p>cut <a href='https://a.test", "cut <a href='https://a.test"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


# Bounds while rendering (RELIABILITY rule 13): whatever a template does, it ends in
# TEMPLATE_ERROR within its time budget, having allocated at most a bounded amount.

_BASE = "{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c = [b] * 1000 %}"
_TREE = (
    "{% set a = ['x' * 100] * 100 %}{% set b = [a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c] %}"
    "{% set e = {'k': d, 'l': d} %}"
)
_SQUARES = "{% set x = 7 ** 1000 %}" + "".join("{% set x = x * x %}" for _ in range(20))
HOSTILE = {
    # A small structure that prints huge: every way of turning it into text.
    "print": _BASE + "{{ c }}",
    "string": _BASE + "{{ c|string|length }}",
    "tojson": _BASE + "{{ c|tojson|length }}",
    "pprint": _BASE + "{{ c|pprint|length }}",
    "join": _BASE + "{{ c|join|length }}",
    "percent": _BASE + "{{ ('%s' % [c])|length }}",
    "format-filter": _BASE + "{{ '%s'|format(c)|length }}",
    "str-format": _BASE + "{{ '{}'.format(c)|length }}",
    "concat": _BASE + "{{ (c ~ '')|length }}",
    "indent": _BASE + "{{ c|indent(2)|length }}",
    "escape": _BASE + "{{ c|e|length }}",
    "literal-tree": _TREE + "{{ e|string|length }}",
    "namespace": "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}"
    "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns }}",
    # Numbers that double in size at each step.
    "big-int-squares": _SQUARES + "{{ x > 1 }}",
    "big-int-power": "{{ (2 ** 4000) ** 2 > 1 }}",
    # One call that builds a huge result from small arguments.
    "center-list": "{{ ('a'|center(200000))|list|length }}",
    "sum-of-lists": "{{ (xs|sum(start=[]))|length }}",
    "slice": "{{ ([1]|slice(10000000))|list|length }}",
    "batch": "{{ ([1]|batch(100000000, 0))|list|length }}",
    "urlize-target": "{{ ('a.co ' * 3000)|urlize(target='t' * 100000)|length }}",
    "fromkeys": "{{ {}.fromkeys(range(100000), 'x')|length }}",
    "wordwrap": "{{ ('a ' * 30000)|wordwrap(1, wrapstring='w' * 1000)|length }}",
    "tojson-indent": "{{ [[[[[[1]]]]]]|tojson(indent=100000)|length }}",
    "markup-center": "{{ ('a'|e).center(900000000)|length }}",
    "bytes-ljust": "{{ 'a'.encode().ljust(900000000)|length }}",
    "bytes-repeat": "{{ ('a'.encode() * 900000000)|length }}",
    "bytes-percent": "{{ ('%900000000s'.encode() % ('a'.encode(),))|length }}",
    "translate": "{{ ('a' * 1000).translate({97: 'x' * 60000})|length }}",
    "to-bytes": "{{ (1).to_bytes(900000000, 'big')|length }}",
    # Many small values: each one fits, all of them do not.
    "captured-copies": "{% set s %}{% for i in range(100000) %}{{ 'x' * 60000 }}{% endfor %}"
    "{% endset %}{{ s|length }}",
    "map-center": "{{ range(100000)|map('center', 60000)|list|length }}",
    # Time with no output at all.
    "nested-ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "nested-variables": "{% for i in xs %}{% for j in xs %}{% for k in xs %}{% endfor %}"
    "{% endfor %}{% endfor %}",
    "recursive-loop": "{% for x in xs recursive %}{% if loop.depth < 4 %}{{ loop(xs) }}{% endif %}"
    "{% endfor %}",
}
BUDGET_DETAILS = (
    "rendered body too large",
    "template built more than its memory budget",
    "template ran longer than its time budget",
)
LIMIT = 64 * 1024
SECONDS = 0.1


@pytest.mark.parametrize("html", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_end_within_their_bounds(html: str) -> None:
    renderer = TemplateRenderer(max_rendered_bytes=LIMIT, max_render_seconds=SECONDS)
    variables: dict[str, object] = {"xs": [[1]] * 20_000}
    tracemalloc.start()
    started = time.thread_time()
    try:
        with pytest.raises(PermanentFailure) as caught:
            renderer.render(_template(html=html), variables)
        spent = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert caught.value.reason is Reason.TEMPLATE_ERROR
    assert caught.value.detail.startswith(BUDGET_DETAILS), caught.value.detail
    assert spent < SECONDS + 1.0  # the time budget, plus one bounded step and tracing
    assert peak < 64 * LIMIT  # the memory allowance is 32 * LIMIT


def test_a_loop_with_no_output_stops_at_the_time_budget() -> None:
    html = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

    for seconds in (0.05, 0.2):
        started = time.thread_time()
        failure = _fails(_template(html=html), {}, max_render_seconds=seconds)
        spent = time.thread_time() - started

        assert failure.detail == "template ran longer than its time budget (html)"
        assert seconds <= spent < seconds + 0.5


def test_values_built_count_against_the_memory_budget_even_when_freed() -> None:
    # Each 60,000-character string is dropped at once; 32 * 64 KiB of them is the allowance.
    html = "{% for i in range(1000) %}{% set s = 'x' * 60000 %}{% endfor %}done"

    assert _fails(_template(html=html), {}, max_rendered_bytes=LIMIT).detail == (
        "template built more than its memory budget (html)"
    )
    assert (
        TemplateRenderer(max_rendered_bytes=LIMIT)
        .render(_template(html=html.replace("1000", "30")), {})
        .html
        == "done"
    )


def test_compiling_a_huge_template_is_refused_and_the_refusal_is_cached() -> None:
    renderer = TemplateRenderer()
    template = _template(html="{{ a }}" * 100_000)  # 700 KB: 6 s and 900 MB to compile

    for _ in range(2):
        with pytest.raises(PermanentFailure) as caught:
            renderer.render(template, {"a": ""})
        assert caught.value.detail == (
            f"template too large to compile (more than {MAX_TEMPLATE_TOKENS} tokens) (html)"
        )
    assert renderer.cache_info().hits == 2  # the subject, and the cached refusal


@pytest.mark.parametrize(
    "html",
    [
        "{{ (2 ** 4000) > 1 }}",
        "{{ 3 ** 2500 }}",
        "{{ range(1000)|list|length }}",
        "{{ [[1, 2], [3]]|tojson(indent=2) }}",
        "{{ {'a': [1, 2]}|pprint }}",
        "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}ok",
        "{{ ('a b ' * 100)|wordwrap(10) }}",
        "{{ [1, 2, 3]|slice(2)|list }}",
        "{{ [1, 2, 3]|batch(2)|map('sum')|list }}",
        "{{ xs|sum }} {{ xs|join(', ') }} {{ xs|map('string')|join }} {{ xs|select('odd')|list }}",
        "{{ 'x'|center(100) }}|{{ '%-8s|%5.1f'|format('a', 2.25) }}|{{ '{:>6}'.format('b') }}",
        "{% macro m(n) %}<{{ n }}>{% endmacro %}{% for i in xs %}{{ m(i) }}{% endfor %}",
        "{% set ns = namespace(n=0) %}{% for i in xs %}{% set ns.n = ns.n + i %}{% endfor %}"
        "{{ ns.n }}",
        "{% for k, v in {'b': 1, 'a': 2}|dictsort %}{{ k }}={{ v }};{% endfor %}{{ (1, 2) }}",
    ],
)
def test_ordinary_templates_render_exactly_as_in_the_plain_sandbox(html: str) -> None:
    variables: dict[str, object] = {"xs": [1, 2, 3]}
    plain = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)

    email = TemplateRenderer().render(_template(html=html), variables)

    assert email.html == plain.from_string(html).render(variables)


def test_a_large_ordinary_email_renders() -> None:
    rows = [{"name": f"Item {i}", "price": i * 1.5} for i in range(5000)]
    html = (
        "<table>{% for row in rows %}<tr><td>{{ loop.index }}</td><td>{{ row.name|title }}</td>"
        "<td>{{ '%.2f'|format(row.price) }}</td></tr>{% endfor %}</table>"
    )

    email = TemplateRenderer().render(_template(html=html), {"rows": rows})

    assert email.html.count("<tr>") == 5000
