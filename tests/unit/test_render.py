"""Rendering in the guarded sandbox, and HTML-to-text."""

from __future__ import annotations

import time

import pytest

from email_worker.render import TemplateRenderer
from email_worker.textify import html_to_text
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


def _fails(template: Template, variables: dict[str, object], **kwargs: int) -> PermanentFailure:
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
