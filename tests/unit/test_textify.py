"""HTML to text (``render.textify``): its fast pass (one ``re.split``, raw-text elements skipped
by position) gives exactly what reading the tokens one ``re.search`` at a time gives, whatever
the input, and its ``str``-method collapsing of whitespace and line marks gives exactly what
the two regular-expression substitutions it replaced gave. The expected texts of ordinary HTML
are in ``test_render.py``; linear time is in ``test_linear_time.py``."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.render import textify
from email_worker.render.textify import html_to_text

# What HTML around raw-text elements is made of, as whole pieces: the split pass and the search
# pass differ only in how they find where a script or style ends.
_PIECES = [
    "<script>", "</script>", "</SCRIPT >", "<style type='x'>", "</style>", "<script/>",
    "<!--", "-->", "<!x>", "<?p?>", "<a href='https://a.test/x?a=1&amp;b=2'>", "<a href=#t>",
    "</a>", "<br/>", "<p>", "</p>", "<li>", "</li>", "<td>", "<div>", "</div>", "<head>",
    "</head>", "<title>", "<noscript>", "</noscript>", "<b>", "<a<a", "x < y", "&amp;", "&lt;",
    "&#1;", "\x00", "\x01", " ", "  ", "\n", "\t", "\u00a0", "\u2028", "word", "'", '"', ">",
]  # fmt: skip
_HTML = st.lists(st.sampled_from(_PIECES), max_size=60).map("".join) | st.text(max_size=200)


def _token_by_token(html: str) -> str:
    text = textify._Text(html)
    textify._search_pass(text, 0)
    return textify._joined(text.pieces)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_HTML)
def test_the_split_pass_reads_like_the_token_by_token_pass(html: str) -> None:
    assert html_to_text(html) == _token_by_token(html)


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<style>p{}</style><p>a</p><style>q{}</style>b", "a\n\nb"),
        # A comment inside the element hides its end tag from the split: read on from it.
        ("<style><!-- </style><p>shown</p><!-- -->", "shown"),
        ("<style><!--</style>x<style><!--</style>y", "xy"),
        ("<script>if (a<b) { x('</p>') }</script>After", "After"),
        ("<SCRIPT>x</script >y<script/>z", "yz"),
        ("<script>never closed <p>hidden", ""),
        ("a\x00b\x01c<br>d", "abc\nd"),  # the document's own control characters are no marks
    ],
)
def test_raw_text_elements_end_where_their_end_tag_is(html: str, text: str) -> None:
    assert html_to_text(html) == text == _token_by_token(html)


# The collapsing the module did before (issue 20), as the reference.
_SPACES = re.compile(r"\s+")
_MARKS = re.compile(r" ?[\x00\x01][ \x00\x01]*+")


def _by_substitution(text: str) -> str:
    text = _SPACES.sub(" ", text)
    return _MARKS.sub(lambda run: "\n\n" if "\x01" in run.group() else "\n", text).strip()


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["\x00", "\x01", " ", "  ", "\n", "\t", "\u3000", "ab", "c"])))
def test_collapsing_marks_and_spaces_matches_the_substitutions(pieces: list[str]) -> None:
    assert textify._joined(pieces) == _by_substitution("".join(pieces))
