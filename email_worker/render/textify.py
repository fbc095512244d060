"""HTML to plain text, for templates that ship no text body (CONTRACT section 5).

One regular-expression pass over the tags, good enough for transactional email: the content
of ``script``, ``style`` and ``head`` is dropped, block elements and ``<br>`` become line
breaks, list items get a ``- `` bullet, links read ``text (href)``, entities are unescaped and
whitespace is collapsed. It never executes or fetches anything and never raises on malformed
HTML (a ``<`` that starts no tag is text). It replaced an ``html.parser`` walk that cost
~130 µs per email, a tenth of the worker's CPU; this pass is several times cheaper.

The tokenizer runs in C over the whole document (one ``re.split``: no match object, no method
call per tag) and one loop reads its pieces; the content of a ``script`` or ``style`` element
is skipped by position. Only when a comment inside one hides its end tag from the split (the
tokens no longer line up with the element's end) does the rest go token by token with
``re.search`` from there, as this module always did: both are linear. Whitespace and the line
marks are then collapsed by ``str`` methods, not by regular expressions over every character
(issue 20: the old loop and its two substitutions cost 3 ms of a 50 KB digest's 10 ms).
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
# What a start tag and an end tag add (skipped elements and links aside; others add nothing).
_OPENS = (
    {tag: _BREAK for tag in _LINE}
    | {tag: _PARA for tag in _PARAGRAPH}
    | {tag: " " for tag in _CELL}
    | {"br": _BREAK, "li": _BREAK + "- "}
)
_CLOSES = {tag: _BREAK for tag in _LINE} | {tag: _PARA for tag in _PARAGRAPH}


# A comment, a declaration or processing instruction, or a start/end tag (quoted attribute
# values may hold '>'). Anything else, '<' included, is text. Groups: a comment or
# declaration after its "<"; for a tag, its "/" (an end tag), its name and the rest up to ">".
# Linear time whatever the input (RELIABILITY rule 19): no part of a tag may cross a '<', so
# every attempt ends at the next '<'; and the quantifiers are possessive (``*+``), so an
# attempt that fails is not retried with the name and the attributes split differently
# ("<a" and 16 KB of letters cost 10 s of backtracking with greedy ones). The attributes are
# a run of plain characters, then (a quoted value, a run)*: the same text as the alternation
# (plain | quoted)*, matched with fewer steps. The leading "<" outside any group lets the
# engine look for it in C; groups that do not take part cost no string in the split.
_TOKEN = re.compile(
    r"<(?:(!--.*?(?:-->|\Z)|[!?][^<>]*+>?)"
    r"|(/?)([a-zA-Z][^\t\n\r\f />\x00<]*+)([^<>\"']*+(?:(?:\"[^<\"]*+\"|'[^<']*+')[^<>\"']*+)*+)>)",
    re.S,
)
_ATTRIBUTE = re.compile(r"""([^\s/=>]++)(?:\s*+=\s*+("[^"]*+"|'[^']*+'|[^\s>]*+))?""")
# Raw text (never markup) runs to its end tag; an unclosed one, to the end.
_RAW_END = {tag: re.compile(f"</{tag}\\s*>", re.I) for tag in ("script", "style")}
_SPECIAL = _SKIP | {"a"}  # the tags that do more than add a piece (``_Text.tag``)
_STEP = 5  # re.split gives a text, then the token's 4 groups, and so on; a text last


def _token_length(parts: list[str], index: int) -> int:
    """The length in the html of the token whose groups follow the text ``parts[index]``."""
    other = parts[index + 1]
    if other is not None:
        return 1 + len(other)
    return 2 + len(parts[index + 2]) + len(parts[index + 3]) + len(parts[index + 4])


class _Text:
    """The pieces of the text so far, and the state of the conversion."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.pieces: list[str] = []
        self.skipping = 0
        self.link: tuple[str, int] | None = None  # (href, index of the first piece inside)
        # Documents holding our marks are rare: only then is every piece of text cleaned.
        self.marked = _BREAK in html or _PARA in html

    def data(self, data: str) -> None:
        if data and not self.skipping:  # our marks must not come from the document itself
            if "&" in data:
                data = unescape(data)
            if self.marked:
                data = data.replace(_BREAK, "").replace(_PARA, "")
            self.pieces.append(data)

    def tag(self, closing: str, name: str, rest: str) -> str | None:
        """A start or end tag; the name of a raw-text element it opens, if it does."""
        tag = name.lower()
        if closing:
            self.close(tag)
            return None
        piece = _OPENS.get(tag)
        if piece is not None:
            self.pieces.append(piece)
        elif tag in _SKIP:
            if rest and rest.rstrip().endswith("/"):  # <x/>: opens no region
                return None
            self.skipping += 1
            return tag if tag in _RAW_END else None
        elif tag == "a":
            # Links do not nest (HTML closes an open <a> at the next one): each piece is
            # joined into at most one label, so nested <a> cannot make this quadratic.
            self.close("a")
            self.link = (dict(_attributes(rest)).get("href") or "", len(self.pieces))
        return None

    def close(self, tag: str) -> None:
        piece = _CLOSES.get(tag)
        if piece is not None:
            self.pieces.append(piece)
        elif tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "a" and self.link is not None:
            href, start = self.link
            self.link = None
            label = "".join(self.pieces[start:]).strip()
            if href and not href.startswith("#") and href != label:
                self.pieces.append(f" ({href})" if label else href)


def _split_pass(text: _Text) -> int:
    """Every token from one ``re.split``. Returns where the rest must be read token by token
    (``len(html)`` when all was read)."""
    parts = _TOKEN.split(text.html)
    last = len(parts) - 1
    index = counted = position = 0  # position: where parts[counted] starts in the html
    append = text.pieces.append
    while index < last:
        data = parts[index]
        if data and not text.skipping:
            if text.marked or "&" in data:
                text.data(data)
            else:  # what ``text.data`` does with plain text, without the call
                append(data)
        name = parts[index + 3]
        index += _STEP
        if name is None:  # a comment or a declaration
            continue
        tag = name.lower()
        if tag not in _SPECIAL:  # what ``text.tag`` does for these, without the call
            piece = (_CLOSES if parts[index - 3] else _OPENS).get(tag)
            if piece is not None:
                append(piece)
            continue
        raw = text.tag(parts[index - 3], name, parts[index - 1])
        if raw is None:
            continue
        while counted < index:  # positions are only needed here: counted from the last one
            position += len(parts[counted]) + _token_length(parts, counted)
            counted += _STEP
        end = _raw_end(text.html, raw, position)
        found = _skipped_to(parts, index, position, end)
        if found is None:  # the element ends inside a token: the rest goes token by token
            return end
        index = counted = found
        position = end
    text.data(parts[last])
    return len(text.html)


def _skipped_to(parts: list[str], index: int, position: int, end: int) -> int | None:
    """The index of the piece of text that position ``end`` falls in, cut to start there
    (``position``: where ``parts[index]`` starts); ``None`` when ``end`` falls inside a token,
    a comment there having hidden an end tag from the split."""
    last = len(parts) - 1
    while index < last and position + len(parts[index]) < end:
        position += len(parts[index]) + _token_length(parts, index)
        index += _STEP
        if position > end:
            return None
    parts[index] = parts[index][end - position :]
    return index


def _raw_end(html: str, tag: str, start: int) -> int:
    found = _RAW_END[tag].search(html, start)
    return found.start() if found else len(html)


def _search_pass(text: _Text, position: int) -> None:
    """The tokens from ``position``, one ``re.search`` at a time."""
    html = text.html
    while (token := _TOKEN.search(html, position)) is not None:
        text.data(html[position : token.start()])
        position = token.end()
        _, closing, name, rest = token.groups()  # (a comment or declaration has no name)
        if name is not None:
            raw = text.tag(closing, name, rest)
            if raw is not None:
                position = _raw_end(html, raw, position)
    text.data(html[position:])


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
    text = _Text(html)
    position = _split_pass(text)
    if position < len(html):
        _search_pass(text, position)
    return _joined(text.pieces)


def _joined(pieces: list[str]) -> str:
    """The pieces as text. Source whitespace means nothing: one space between words
    (``str.split`` knows the same whitespace as ``\\s``). Then a run of marks and the spaces
    among them is one break: a blank line if any of them was a paragraph mark."""
    words = " ".join("".join(pieces).split())
    for mark in (_BREAK, _PARA):  # the spaces are single: each one touches a mark or not
        words = words.replace(" " + mark, mark).replace(mark + " ", mark)
    words = _BREAKS.sub(_BREAK, words)  # single breaks, so each one touches a mark or not
    words = words.replace(_PARA + _BREAK, _PARA).replace(_BREAK + _PARA, _PARA)
    return _PARAS.sub("\n\n", words).replace(_BREAK, "\n").strip()


# Each starts with a literal character, which the regular-expression engine looks for in C
# before trying a match ("\x01+" was tried at every position: 4 ms for a 40 KB text).
_BREAKS = re.compile(f"{_BREAK}{_BREAK}+")
_PARAS = re.compile(f"{_PARA}{_PARA}*")
