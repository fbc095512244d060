"""Header safety: the one check every outgoing header value passes (RELIABILITY rule 12).

We do not rely on the ``email`` package to refuse header injection: some Python 3.11 builds
still fold an injected line into an encoded word and deliver it (CVE-2024-6923). So a value is
refused outright when it holds anything that could end or smuggle a header line: CR, LF, NUL, any
other C0 or C1 control character (tab included: no legitimate subject needs one), DEL, the
Unicode line and paragraph separators (U+2028, U+2029; U+0085 is C1), or an RFC 2047
encoded-word opener ``=?`` (the package encodes non-ASCII itself; a value that arrives
pre-encoded is a trick). Values are also capped in length.
"""

from __future__ import annotations

import functools
import re
from email.charset import QP, Charset
from email.header import Header
from email.utils import formataddr

from schemas.failures import PermanentFailure, Reason

MAX_HEADER_LENGTH = 998  # RFC 5322 line limit; our values are folded, this caps the whole value

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|=\?")


def unsafe_reason(value: str, *, max_length: int = MAX_HEADER_LENGTH) -> str | None:
    """Why ``value`` may not be a header value, or ``None`` when it is safe. Never echoes it."""
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    match = _UNSAFE.search(value)
    if match is None:
        return None
    if match.group() == "=?":
        return "encoded-word sequence"
    return f"control character U+{ord(match.group()):04X}"


def check_header_value(name: str, value: str, *, max_length: int = MAX_HEADER_LENGTH) -> str:
    """Return ``value`` unchanged when it is safe as the value of header ``name``.

    Raises ``PermanentFailure(UNSAFE_CONTENT)`` whose detail names the header and the problem,
    never the value (it may hold an address or user data).
    """
    reason = unsafe_reason(value, max_length=max_length)
    if reason is not None:
        raise PermanentFailure(Reason.UNSAFE_CONTENT, f"header {name}: {reason}")
    return value


# Folding (RFC 5322 section 2.2.3): a line SHOULD stay within 78 characters and MUST stay within
# 998 octets; a header is folded by putting CRLF before whitespace that is already in the value.
SOFT_LINE = 78
HARD_LINE = 998
_SPACES = re.compile(r"( +)")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.header_encoding = QP


def header_line(name: str, value: str, *, utf8: bool = False, words: bool = False) -> str:
    """``name: value`` folded so that no line passes 998 octets, and a line passes 78 only for
    a word that cannot be split. ``value`` must have passed ``check_header_value``.

    Non-ASCII without ``utf8`` (RFC 6532), or a word too long for one line, is written as
    RFC 2047 encoded words, which can be split anywhere. ``words`` marks a structured header
    (addresses, ``List-Unsubscribe`` URLs) that encoded words would break: it is folded at
    its spaces only, and raises ``PermanentFailure(UNSAFE_CONTENT)`` when a word cannot fit."""
    if len(name) + 2 + len(value) <= SOFT_LINE and value.isascii():
        return f"{name}: {value}"  # what folding gives a value that fits on one line
    raw = utf8 or value.isascii()
    if raw:
        lines = _fold_at_spaces(f"{name}:", value)
        if all(len(line.encode("utf-8")) <= HARD_LINE for line in lines):
            return "\r\n".join(lines)
        if words:
            raise PermanentFailure(
                Reason.UNSAFE_CONTENT, f"header {name}: a word too long to fold into 998 octets"
            )
    return f"{name}: {_encoded_words(name, value)}"


def _fold_at_spaces(head: str, value: str) -> list[str]:
    """``head`` and ``value``, broken before runs of spaces into lines of at most 78 octets
    where the words allow. Every line after the first starts with a space and holds a word
    (trailing spaces stay on the last line), so unfolding (removing each CRLF) gives back
    ``head + " " + value``."""
    lines: list[str] = []
    current, size = [head], len(head.encode("utf-8"))
    pieces = _SPACES.split(" " + value)  # "", " ", word, " ", word...: a space before each word
    for spaces, word in zip(pieces[1::2], pieces[2::2], strict=True):
        piece = spaces + word
        piece_size = len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        # The first word stays on the first line: readers keep the space of a value that
        # starts on a continuation line (Python's parser gives " word").
        if size + piece_size > SOFT_LINE and word and (lines or len(current) > 1):
            lines.append("".join(current))
            current, size = [], 0
        current.append(piece)
        size += piece_size
    lines.append("".join(current))
    return lines


def _encoded_words(name: str, value: str) -> str:
    return Header(value, _UTF8_QP, header_name=name).encode(linesep="\r\n", maxlinelen=SOFT_LINE)


@functools.lru_cache(maxsize=64)
def mailbox_line(name: str, display_name: str, address: str) -> str:
    """``name: Display Name <address>`` (``From``, ``Reply-To``; CONTRACT section 11), folded.

    An ASCII display name is quoted when it holds specials (``email.utils.formataddr``); any
    other is written as RFC 2047 encoded words (``email.header``), never raw, so the header is
    ASCII in every message. ``email.headerregistry``'s folder is not used: on Python 3.11 it
    drops the space between two encoded words it splits a long name into. Both arguments must
    have passed ``check_header_value`` and ``address`` be one bare address. Cached: the sender
    is the same for every email."""
    if display_name.isascii():
        return header_line(name, formataddr((display_name, address)), words=True)
    lines = f"{name}: {_encoded_words(name, display_name)}".split("\r\n")
    # The address on the last line when it fits in 78 characters, else on a line of its own.
    fits = len(lines[-1]) + len(address) + 3 <= SOFT_LINE
    lines[-1:] = [f"{lines[-1]} <{address}>"] if fits else [lines[-1], f" <{address}>"]
    return "\r\n".join(lines)
