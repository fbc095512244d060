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

import re

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
