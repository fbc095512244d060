"""The sandbox's cheaper ways (issue 20) give what Jinja's own do: a printed value escaped in
one call (``GuardedEnvironment.guard_escaped``) reads as ``markupsafe.escape`` writes it; a
dict's key read as an attribute (``item.title``) without Jinja's failed attribute lookup gives
what the sandbox gives, methods and unsafe names included; and the renderer's stream, which
counts characters as it goes and UTF-8 bytes once at the end, still refuses what it did.
Bounds and refusals are in ``test_render.py``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from email_worker.render.budget import render_budget
from email_worker.render.renderer import TemplateRenderer
from email_worker.render.sandbox import GuardedEnvironment
from schemas.failures import PermanentFailure, Reason
from templates_client.template import Template

_LIMIT = 1 << 20
_TEMPLATES = [
    "<p>{{ x }}</p>",
    "{{ x }}{{ x|e }}{{ x|safe }}",
    "{% for v in xs %}<i>{{ v }}</i>{% endfor %}",
    "{{ d.k }}|{{ d['k'] }}|{{ d.items is defined }}|{{ d.missing is defined }}",
    "{% set s %}<b>{{ x }}</b>{% endset %}{{ s }}{{ s|length }}",
    "{% macro m(v) %}[{{ v }}]{% endmacro %}{{ m(x) }}",
    "{% autoescape false %}{{ x }}{% endautoescape %}{{ x }}",
    "{{ '%s|%.1f'|format(x, 2.5) }}{{ (x ~ '<')|e }}",
]
_VALUES = st.one_of(
    st.text(st.sampled_from("<>&'\"ab é"), max_size=12),
    st.text(max_size=8).map(Markup),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)


def _rendered(env: Any, source: str, variables: dict[str, Any]) -> str:
    with render_budget(32 * _LIMIT, 5.0):
        return str(env.from_string(source).render(variables))


@settings(max_examples=300, deadline=None)
@given(
    source=st.sampled_from(_TEMPLATES),
    x=_VALUES,
    xs=st.lists(_VALUES, max_size=4),
    k=_VALUES,
)
def test_printing_and_reading_keys_give_what_the_plain_sandbox_gives(
    source: str, x: object, xs: list[object], k: object
) -> None:
    variables = {"x": x, "xs": xs, "d": {"k": k, "items": "shadowed"}}
    plain = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)

    expected = _rendered(plain, source, variables)

    assert _rendered(GuardedEnvironment(limit=_LIMIT, autoescape=True), source, variables) == (
        expected
    )


@pytest.mark.parametrize(
    "name", ["items", "keys", "get", "__class__", "__len__", "update", "pop", "k", "nope"]
)
def test_a_dict_attribute_is_what_the_sandbox_returns(name: str) -> None:
    data = {"k": 1, "items": 2, "update": 3, "pop": 4, "__len__": 5}
    guarded = GuardedEnvironment(limit=_LIMIT, autoescape=True)
    plain = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)

    found, expected = guarded.getattr(data, name), plain.getattr(data, name)

    # Undefined values (a missing key, an unsafe method) compare by their kind and message.
    assert type(found) is type(expected)
    assert getattr(found, "_undefined_message", found) == getattr(
        expected, "_undefined_message", expected
    )


def test_a_mutating_method_of_a_dict_variable_stays_refused() -> None:
    env = GuardedEnvironment(limit=_LIMIT, autoescape=True)

    with pytest.raises(SecurityError):
        _rendered(env, "{{ d.update({'k': 2}) }}", {"d": {"k": 1}})
    with pytest.raises(UndefinedError):
        _rendered(env, "{{ d.nope }}", {"d": {"k": 1}})


def _template(html: str) -> Template:
    return Template("welcome", None, "Hi", html, "text", "v1")


def test_a_lone_surrogate_in_the_output_is_unsafe_content() -> None:
    with pytest.raises(PermanentFailure) as caught:
        TemplateRenderer().render(_template("<p>{{ x }}</p>"), {"x": "\ud800"})

    assert caught.value.reason is Reason.UNSAFE_CONTENT
    assert caught.value.detail == "rendered html is not valid unicode"


@pytest.mark.parametrize("value", ["a" * 1000, "é" * 500])  # 3,000 bytes, 3 times
def test_the_cap_counts_utf8_bytes_of_the_whole_output(value: str) -> None:
    html = "{% for i in range(3) %}{{ x }}{% endfor %}"
    renderer = TemplateRenderer(max_rendered_bytes=3000)

    assert renderer.render(_template(html), {"x": value}).html == value * 3
    with pytest.raises(PermanentFailure, match=r"rendered body too large \(html\)"):
        renderer.render(_template(html), {"x": value + "é"})


def test_a_failure_inside_the_stream_still_names_the_template_line() -> None:
    with pytest.raises(PermanentFailure) as caught:
        TemplateRenderer().render(
            _template("a\n{% for i in xs %}\n{{ i.nope }}{% endfor %}"), {"xs": [{"k": 1}]}
        )

    assert caught.value.detail == "missing attribute 'nope' (html line 3)"
