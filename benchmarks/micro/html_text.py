"""HTML to text: ``email_worker.render.textify`` (one regular-expression pass) against two library
options, on a ~2 KB and a ~40 KB HTML email.

- ``html.parser``: the standard library's tokenizer driving the same rules (skip ``head``,
  ``style``, ``script``; blocks and ``<br>`` break lines; ``- `` bullets; ``label (href)``
  links; whitespace collapsed). What ``textify`` replaced; no dependency. Its output must equal
  ours exactly.
- ``html2text`` (PyPI, GPL-3.0-or-later) set up for a text part: no wrapping, no images, no
  emphasis marks, Unicode kept. It writes Markdown (``# heading``, ``[label](href)``,
  ``  * item``), so equivalence is the same words in the same order.
"""

from __future__ import annotations

import re
from functools import partial
from html.parser import HTMLParser

import html2text

from benchmarks.micro import samples
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.render.textify import html_to_text

PART = "textify"
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "hr"}
)
_LINE = frozenset(
    {"div", "tr", "section", "article", "header", "footer", "nav", "main", "aside"}
    | {"address", "dl", "dt", "dd", "figure", "figcaption", "form", "center", "li"}
)
_BREAK, _PARA = "\x00", "\x01"
_SPACES = re.compile(r"\s+")
_MARKS = re.compile(f" ?[{_BREAK}{_PARA}][ {_BREAK}{_PARA}]*")
_WORDS = re.compile(r"\w+")
NOTES = (
    "html2text is GPL-3.0-or-later: as a runtime dependency it would bind this MIT package's "
    "distribution to the GPL; its text is Markdown (`# `, `[label](href)`, `  * `)",
)


class _Walk(HTMLParser):
    """The same rules as ``textify``, on the standard library's tokenizer."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skipping = 0
        self._link: tuple[str, int] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.pieces.append(_BREAK)
        elif tag in _PARAGRAPH:
            self.pieces.append(_PARA)
        elif tag in _LINE:
            self.pieces.append(_BREAK + "- " if tag == "li" else _BREAK)
        elif tag in ("td", "th"):
            self.pieces.append(" ")
        elif tag == "a":
            self.handle_endtag("a")  # links do not nest
            self._link = (dict(attrs).get("href") or "", len(self.pieces))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _PARAGRAPH:
            self.pieces.append(_PARA)
        elif tag in _LINE:
            self.pieces.append(_BREAK)
        elif tag == "a" and self._link is not None:
            href, start = self._link
            self._link = None
            label = "".join(self.pieces[start:]).strip()
            if href and not href.startswith("#") and href != label:
                self.pieces.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.pieces.append(data.replace(_BREAK, "").replace(_PARA, ""))


def stdlib_text(html: str) -> str:
    """``html`` as text through ``html.parser``, by ``textify``'s rules."""
    walk = _Walk()
    walk.feed(html)
    walk.close()
    text = _SPACES.sub(" ", "".join(walk.pieces))
    return _MARKS.sub(lambda run: "\n\n" if _PARA in run.group() else "\n", text).strip()


def html2text_text(html: str) -> str:
    """``html`` as text through ``html2text``, configured for an email's text part."""
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: mail clients wrap
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True  # keep non-ASCII letters and signs, not ASCII stand-ins
    converter.ignore_tables = True  # layout tables are not data
    return converter.handle(html).strip()


def words(text: str) -> list[str]:
    """The words of a text in order: what a reader gets, whatever the markup."""
    return _WORDS.findall(text)


def check(html: str) -> str:
    """How the three outputs for ``html`` are equivalent; ``AssertionError`` if they are not."""
    ours = html_to_text(html)
    assert stdlib_text(html) == ours, "html.parser walk and textify differ"
    assert words(html2text_text(html)) == words(ours), "html2text and textify differ in words"
    return "html.parser: identical text; html2text: the same words in the same order"


def cases(items: int = 40) -> dict[str, str]:
    """The inputs by name: the ~2 KB welcome email and the digest (~40 KB with 40 items)."""
    welcome, digest = samples.welcome_html(), samples.digest_html(items)
    return {
        f"{len(welcome.encode()) / 1024:.1f} KB HTML": welcome,
        f"{len(digest.encode()) / 1024:.0f} KB HTML": digest,
    }


def run(rounds: int, scale: float = 1.0, items: int = 40) -> list[Comparison]:
    """Ours against each library on each input; ``scale`` multiplies the calls per round."""
    found: list[Comparison] = []
    for (case, html), calls in zip(cases(items).items(), (2000, 100), strict=True):
        equivalent = check(html)
        ours = Side("textify (regex pass)", partial(html_to_text, html))
        n = max(1, int(calls * scale))
        for label, convert in (("html.parser walk", stdlib_text), ("html2text", html2text_text)):
            library = Side(label, partial(convert, html))
            mine, theirs = measure_pair(ours, library, calls=n, rounds=rounds)
            found.append(Comparison(PART, case, mine, theirs, equivalent, NOTES))
    return found
