"""Relaxed canonicalisation (RFC 6376 sections 3.4.2 and 3.4.4) of a message as it goes out,
and the split of its header into fields.

Written here, not taken from ``dkimpy``: its relaxed body canonicalisation replaces every single
space of the body with a space (one regular-expression substitution per word), which costs
about 1 ms for a 20 KB message and 5 ms for 100 KB, more than building the whole message
(``benchmarks/micro/RESULTS.md``, part ``dkim``). This one touches only runs of whitespace.
``tests/unit/test_dkim.py`` checks that both give the same bytes on random input and that
``dkimpy`` verifies what we sign.

Input is what ``render.mime.build_message`` writes: CRLF line ends only (a bare CR or LF would
be rewritten by some relay on the way and break the signature, so it raises ``ValueError``).
"""

from __future__ import annotations

import re

Field = tuple[bytes, bytes]  # (name, raw value after the colon, continuation lines included)

# A run of two or more whitespace characters, or a tab: a single space is already canonical.
# Spelled with a literal space first: about three times faster than [ \t]{2,}|\t on bodies.
_BODY_WSP_RUNS = re.compile(rb"(?: [ \t]|\t)[ \t]*")
_HEADER_WSP = re.compile(rb"[ \t]+")


def split_message(message: bytes) -> tuple[list[Field], bytes]:
    """The header fields in order and the body. Raises ``ValueError`` for a bare CR or LF, a
    missing blank line after the header, or a header line that is no field."""
    newlines = message.count(b"\n")
    if newlines != message.count(b"\r") or newlines != message.count(b"\r\n"):
        raise ValueError("lines must end with CRLF")
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("no blank line after the header")
    fields: list[Field] = []
    for line in message[:end].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:  # a continuation line: part of the value
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise ValueError("a header line that is no field")
        fields.append((name, value))
    return fields, message[end + 4 :]


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """``name:value`` CRLF canonicalised: the name in lower case, the value unfolded, its runs
    of whitespace made one space, no whitespace around the colon or at the end."""
    unfolded = value.replace(b"\r\n", b"")
    return (
        name.rstrip(b" \t").lower() + b":" + _HEADER_WSP.sub(b" ", unfolded).strip(b" \t") + b"\r\n"
    )


def relaxed_body(body: bytes) -> bytes:
    """The body canonicalised: runs of whitespace made one space, whitespace at line ends
    removed, empty lines at the end removed, and one CRLF at the end (nothing for a body that
    is empty or only empty lines)."""
    if b"\t" in body or b"  " in body:  # most bodies have neither: no regular-expression pass
        body = _BODY_WSP_RUNS.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")  # after the runs, at most one space before a CRLF
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    return body[:end] + b"\r\n" if end else b""
