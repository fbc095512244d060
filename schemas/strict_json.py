"""Strict JSON decoding of broker bodies: the first gate of CONTRACT section 3.

``json.loads`` alone accepts what the contract must refuse: duplicate keys (last one wins, so two
readers of one body can disagree), ``NaN`` and ``Infinity``, numbers that overflow to infinity,
lone surrogate escapes that are not Unicode text, and nesting deep enough to exhaust the stack of
whoever walks the result. This module refuses all of them with ``invalid_json``, without recursion
of its own, and with details that never echo the input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from schemas.failures import PermanentFailure, Reason

MAX_DEPTH = 32  # containers nested deeper than this are refused
# Lone surrogates are not Unicode text; NUL is refused by Postgres text/jsonb and by SMTP.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


class _Rejected(ValueError):
    """Raised inside ``json.loads`` hooks; carries a detail free of content."""


def _invalid_json(detail: str) -> PermanentFailure:
    return PermanentFailure(Reason.INVALID_JSON, detail)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Rejected("duplicate object key")
    return result


def _no_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected("number out of range")
    return value


def _check_tree(value: object, max_depth: int) -> None:
    """Walk the decoded value with an explicit stack: bounded nesting, no lone surrogates.

    A lone surrogate (``"\\ud800"``) is legal JSON but not Unicode text: it cannot be encoded as
    UTF-8 for the payload hash, the database or SMTP.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _UNSTORABLE.search(node):
                raise _invalid_json("string holds a NUL or a lone surrogate")
        elif isinstance(node, dict | list):
            if depth > max_depth:
                raise _invalid_json(f"nesting is deeper than {max_depth}")
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def loads_strict(body: bytes, *, max_depth: int = MAX_DEPTH) -> object:
    """Decode ``body`` as strict UTF-8 JSON (a leading BOM is dropped) and return the value.

    Guarantees: no duplicate keys at any level, only finite numbers, containers nested at most
    ``max_depth`` levels (the top level counts as 1), every string encodable as UTF-8 and free
    of NUL (so it can be stored in Postgres and sent over SMTP).
    Raises ``PermanentFailure(Reason.INVALID_JSON, detail)`` otherwise; never ``RecursionError``.
    """
    try:
        text = body.decode("utf-8-sig")  # strict: invalid UTF-8 raises
    except UnicodeDecodeError:
        raise _invalid_json("body is not valid UTF-8") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        # The C scanner guards its own recursion, so very deep input ends here, not in a crash.
        raise _invalid_json(f"nesting is deeper than {max_depth}") from None
    except _Rejected as exc:
        raise _invalid_json(str(exc)) from None
    except json.JSONDecodeError as exc:
        # exc.msg is the parser's own message ("Expecting value"), never the input.
        raise _invalid_json(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:
        # e.g. an integer longer than sys.get_int_max_str_digits().
        raise _invalid_json("malformed JSON") from None
    _check_tree(value, max_depth)
    return value
