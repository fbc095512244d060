"""Reading the gateway's answer to a callback POST: ``http.client``'s response, with its header
block parsed without the ``email`` package.

``http.client`` hands the header lines of every answer to ``email.parser`` (a feed parser,
policies, a ``Message``): a third of the ``callbacks`` process's CPU went there, for the two or
three headers an answer to a POST carries. ``Answer.begin`` is ``HTTPResponse.begin`` of
CPython 3.11 (the status line, ``100 Continue`` skipped, the framing: chunked, length, close)
with ``header_block`` in place of ``http.client.parse_headers``. ``header_block`` gives the
same ``HTTPMessage``, the same (name, value) pairs in the same order, as the ``email`` parser
does with the ``compat32`` policy that ``http.client`` uses: lines split at CR, LF or CRLF; the
block ends at the first line that is neither ``name:`` (printable ASCII but the colon, possibly
empty) nor a continuation (space or tab), nor ``From ``; a continuation is appended to the
header before it (ignored before any header); a ``From `` line and a line starting with ``:``
are ignored, a ``From `` line that is the block's last ends it; a value loses its leading
spaces and tabs and its trailing CR and LF. ``tests/unit/test_callback_answer.py`` checks that
equivalence on generated header blocks, hostile ones included, and its linear time.

The limits are ``http.client``'s: a line of at most 65,536 bytes (``LineTooLong``), at most 100
header lines (``HTTPException``).
"""

from __future__ import annotations

import http.client
import re
from typing import BinaryIO

MAX_LINE = 65536  # http.client._MAXLINE
MAX_HEADERS = 100  # http.client._MAXHEADERS
# email.feedparser.headerRE: a header line, a continuation or an mbox "From " line.
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
# A line and its end (CRLF, CR or LF; the last may have none), as the feed parser splits
# (``StringIO(newline="").readlines()``, which is not linear on lines of megabytes).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def header_lines(fp: BinaryIO) -> list[bytes]:
    """The header lines up to and including the empty line that ends them (or EOF), as
    ``http.client`` reads them."""
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            return lines


def header_block(lines: list[bytes]) -> http.client.HTTPMessage:
    """The headers of ``lines`` as ``http.client.parse_headers`` would give them (see the
    module docstring). Linear in the block's size."""
    message = http.client.HTTPMessage()
    name, parts = "", []
    block = _block(lines)
    for number, line in enumerate(block):
        if line[0] in " \t":
            if name:
                parts.append(line)
            continue
        if name:
            message[name] = _value(parts)
            name, parts = "", []
        if line.startswith("From "):  # an mbox envelope line: never a header
            if number == len(block) - 1:
                break
            continue
        colon = line.find(":")
        if colon > 0:  # at 0: no name, ignored
            name, parts = line[:colon], [line[colon + 1 :]]
    if name:
        message[name] = _value(parts)
    return message


def _block(lines: list[bytes]) -> list[str]:
    """The lines of the header block: split at CR, LF and CRLF, up to the first line that is
    no header line (the empty line, or anything else)."""
    text = b"".join(lines).decode("iso-8859-1")
    block = []
    for line in _LINE.findall(text):
        if not _HEADER_LINE.match(line):
            break
        block.append(line)
    return block


def _value(parts: list[str]) -> str:
    return (parts[0].lstrip(" \t") + "".join(parts[1:])).rstrip("\r\n")


class Answer(http.client.HTTPResponse):
    """``HTTPResponse`` reading its headers with ``header_block``."""

    def begin(self) -> None:
        # CPython 3.11's HTTPResponse.begin, the header parser aside (PSF licence).
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            header_lines(self.fp)  # the 100 answer's headers
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = header_block(header_lines(self.fp))
        self._framing(status)

    def _framing(self, status: int) -> None:
        """Chunked, the length, whether the connection closes after the body: as CPython."""
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = _length(self.headers.get("content-length"), self.chunked)
        method = getattr(self, "_method", None)
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _length(header: str | None, chunked: bool) -> int | None:
    """The body's length from Content-Length (ignored when chunked, negative or not a
    number)."""
    if not header or chunked:
        return None
    try:
        length = int(header)
    except ValueError:
        return None
    return length if length >= 0 else None
