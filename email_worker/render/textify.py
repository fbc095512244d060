"""HTML to plain text, for templates that ship no text body (CONTRACT section 5).

One regular-expression pass over the tags, good enough for transactional email: the content
of ``script``, ``style`` and ``head`` is dropped, block elements and ``<br>`` become line
breaks, list items get a ``- `` bullet, links read ``text (href)``, entities are unescaped and
whitespace is collapsed. It never executes or fetches anything and never raises on malformed
HTML (a ``<`` that starts no tag is text). It replaced an ``html.parser`` walk that cost
~130 µs per email, a tenth of the worker's CPU; this pass is several times cheaper.
"""

from __future__ import annotations

import re
from html import unescape

_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "hr"}
)
_LINE = frozenset(
    {"div", "tr", "li", "section", "article", "header", "footer", "nav", "main", "aside"}
    | {"address", "dl", "dt", "dd", "figure", "figcaption", "form", "center"}
)
_CELL = frozenset({"td", "th"})
_BREAK = "\x00"  # stands for a hard line break until whitespace has been collapsed
_PARA = "\x01"  # stands for a blank line


# A comment, a declaration or processing instruction, or a start/end tag (quoted attribute
# values may hold '>'). Anything else, '<' included, is text.
# Linear time whatever the input (RELIABILITY rule 19): no part of a tag may cross a '<', so
# every attempt ends at the next '<'; and the quantifiers are possessive (``*+``), so an
# attempt that fails is not retried with the name and the attributes split differently
# ("<a" and 16 KB of letters cost 10 s of backtracking with greedy ones).
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<[!?][^<>]*+>?"
    r"|<(/?)([a-zA-Z][^\t\n\r\f />\x00<]*+)((?:[^<>\"']|\"[^<\"]*+\"|'[^<']*+')*+)>",
    re.S,
)
_ATTRIBUTE = re.compile(r"""([^\s/=>]++)(?:\s*+=\s*+("[^"]*+"|'[^']*+'|[^\s>]*+))?""")
_RAW_TEXT = frozenset({"script", "style"})  # their content is never markup


class _TextParser:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._skipping = 0
        self._link: tuple[str, int] | None = None  # (href, index of the first piece inside)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.pieces.append(_BREAK)
        elif tag in _PARAGRAPH:
            self.pieces.append(_PARA)
        elif tag == "li":
            self.pieces.append(_BREAK + "- ")
        elif tag in _LINE:
            self.pieces.append(_BREAK)
        elif tag in _CELL:
            self.pieces.append(" ")
        elif tag == "a":
            # Links do not nest (HTML closes an open <a> at the next one): each piece is
            # joined into at most one label, so nested <a> cannot make this quadratic.
            self.handle_endtag("a")
            self._link = (dict(attrs).get("href") or "", len(self.pieces))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP:  # <br/>, <hr/>: a void element never opens a skipped region
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
        if not self._skipping:  # our markers must not come from the document itself
            self.pieces.append(data.replace(_BREAK, "").replace(_PARA, ""))

    def feed(self, html: str) -> None:
        position = 0
        while (token := _TOKEN.search(html, position)) is not None:
            if token.start() > position:
                self.handle_data(_text(html[position : token.start()]))
            position = token.end()
            name = token.group(2)
            if name is None:
                continue  # comment, doctype, processing instruction
            tag, rest = name.lower(), token.group(3)
            if token.group(1):
                self.handle_endtag(tag)
                continue
            attrs = _attributes(rest) if tag == "a" else []  # only links use theirs
            if rest.rstrip().endswith("/"):
                self.handle_startendtag(tag, attrs)
                continue
            self.handle_starttag(tag, attrs)
            if tag in _RAW_TEXT:  # skip to its end tag (or the end)
                end = re.compile(f"</{tag}\\s*>", re.I).search(html, position)
                position = end.start() if end else len(html)
        if position < len(html):
            self.handle_data(_text(html[position:]))


def _text(data: str) -> str:
    return unescape(data) if "&" in data else data


def _attributes(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for match in _ATTRIBUTE.finditer(text):
        value = match.group(2)
        if value is not None:
            if value[:1] in ("'", '"'):
                value = value[1:-1]
            value = unescape(value)
        found.append((match.group(1).lower(), value))
    return found


def html_to_text(html: str) -> str:
    """Readable plain text for ``html``: at most one blank line in a row, no trailing spaces."""
    parser = _TextParser()
    parser.feed(html)
    text = _SPACES.sub(" ", "".join(parser.pieces))  # source whitespace means nothing
    return _MARKS.sub(_one_break, text).strip()


_SPACES = re.compile(r"\s+")
# A run of marks and the spaces among them, matched once from its start: at most one space
# before the first mark (runs of spaces are single by now), then a possessive class. Linear;
# "[ B P]*P[ B P]*" was quadratic on a long run of B.
_MARKS = re.compile(f" ?[{_BREAK}{_PARA}][ {_BREAK}{_PARA}]*+")


def _one_break(run: re.Match[str]) -> str:
    """A run of marks is one break: a blank line if any of them was a paragraph mark."""
    return "\n\n" if _PARA in run.group() else "\n"
