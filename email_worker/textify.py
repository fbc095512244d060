"""HTML to plain text, for templates that ship no text body (CONTRACT section 5).

A small ``html.parser`` walk, good enough for transactional email: the content of ``script``,
``style`` and ``head`` is dropped, block elements and ``<br>`` become line breaks, list items get
a ``- `` bullet, links read ``text (href)``, entities are unescaped and whitespace is collapsed.
It never executes or fetches anything and never raises on malformed HTML.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

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


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skipping = 0
        self._links: list[tuple[str, int]] = []  # (href, index of the first piece inside)

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
            self._links.append((dict(attrs).get("href") or "", len(self.pieces)))

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
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.pieces[start:]).strip()
            if href and not href.startswith("#") and href != label:
                self.pieces.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self._skipping:  # our markers must not come from the document itself
            self.pieces.append(data.replace(_BREAK, "").replace(_PARA, ""))


def html_to_text(html: str) -> str:
    """Readable plain text for ``html``: at most one blank line in a row, no trailing spaces."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    text = re.sub(r"\s+", " ", "".join(parser.pieces))  # source whitespace means nothing
    # A run of marks is one break: a blank line if any of them was a paragraph mark.
    text = re.sub(f"[ {_BREAK}{_PARA}]*{_PARA}[ {_BREAK}{_PARA}]*", "\n\n", text)
    text = re.sub(f"[ {_BREAK}]*{_BREAK}[ {_BREAK}]*", "\n", text)
    return text.strip()
