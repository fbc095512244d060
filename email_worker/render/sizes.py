"""What a template operation would build, estimated before it runs.

``render.sandbox`` measures every value after it is built (``render.budget.measure``);
that is too late for the operations whose result can be far larger than their operands: one C
call builds it whole (``'a' * 10**9``, ``'%1000000000s' % x``, ``x|center(10**9)``,
``range(10**5)|join(big)``). For those, the functions here give the weight of the result from
the operands alone, and the sandbox refuses the call when it passes the limit. Every other
operation builds at most a small multiple of its operands, which are themselves bounded.

Every function here is linear in its input (RELIABILITY rule 19): format strings are scanned
once, left to right, the way Python's own formatting reads them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Collection
from string import Formatter
from typing import Any

from email_worker.render.budget import UNBOUNDED, measure

MAX_INT_BITS = 4096  # no template needs larger numbers; squaring a big one doubles its size
_SLOT = 8
_OBJECT = 64
# After a "%" (and its "(key)"): flags, width, precision. Anchored with .match(): no search.
_PERCENT_TAIL = re.compile(r"[#0\- +]*+(\*|\d++)?(?:\.(\*|\d*+))?")
_PARENS = re.compile(r"[()]")
_DIGITS = re.compile(r"\d++")
_CACHED_FORMAT = 64  # format strings up to this long have their width cached


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 12 else UNBOUNDED  # no int() of a huge literal


def percent_width(fmt: str) -> int:
    """The widest width or precision in a ``%``-format string (``*`` is unbounded)."""
    if len(fmt) <= _CACHED_FORMAT:  # a template's own "%.2f", used once per item of a loop
        return _cached_percent_width(fmt)
    return _percent_width(fmt)


def _percent_width(fmt: str) -> int:
    widest = 0
    position = fmt.find("%")
    while position != -1:
        position += 1
        if fmt.startswith("(", position):
            position = _key_end(fmt, position)
            if position < 0:
                return 0  # "incomplete format key": the format fails before building
        tail = _PERCENT_TAIL.match(fmt, position)
        assert tail is not None  # every part of the pattern is optional
        for group in tail.groups():
            if group == "*":
                return UNBOUNDED
            if group:
                widest = max(widest, _number(group))
        position = fmt.find("%", tail.end() + 1)  # past the conversion character (or "%%")
    return widest


_cached_percent_width = functools.lru_cache(maxsize=256)(_percent_width)


def _key_end(fmt: str, start: int) -> int:
    """The index after the ")" that closes the "(" at ``start`` (nested pairs counted, as
    Python does), or -1."""
    depth = 0
    for paren in _PARENS.finditer(fmt, start):
        depth += 1 if paren.group() == "(" else -1
        if depth == 0:
            return paren.end()
    return -1


def brace_width(fmt: str) -> int:
    """The largest number in a ``str.format`` spec; a spec with a nested field is unbounded."""
    widest = 0
    try:
        fields = list(Formatter().parse(fmt))
    except ValueError:
        return 0  # malformed: the format fails before building
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            return UNBOUNDED
        for digits in _DIGITS.findall(spec or ""):
            widest = max(widest, _number(digits))
    return widest


def binop_size(operator: str, left: Any, right: Any) -> int:
    """Weight of ``left <operator> right`` for ``*``, ``+``, ``%`` and ``**``."""
    if operator == "*":
        left_int, right_int = isinstance(left, int), isinstance(right, int)
        if right_int and not left_int:
            return _repeat_size(left, right)
        if left_int and not right_int:
            return _repeat_size(right, left)
        if left_int and right_int:
            return _int_size(left.bit_length() + right.bit_length())
    elif operator == "+" and isinstance(left, _SEQUENCES):
        if isinstance(right, _SEQUENCES):
            return _repeat_size(left, 1) + _repeat_size(right, 1)
    elif operator == "%" and isinstance(left, _TEXT):
        text = left if isinstance(left, str) else left.decode("latin-1")
        return len(text) + percent_width(text)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        return _int_size(int(right * math.log2(abs(left))) if abs(left) > 1 else 0)
    return 0


# Tuples, not unions: isinstance with a tuple is the cheaper check, made for every operator.
_TEXT = (str, bytes)
_SEQUENCES = (str, bytes, list, tuple)


def _repeat_size(sequence: object, times: int) -> int:
    if isinstance(sequence, _TEXT):
        return len(sequence) * times
    if isinstance(sequence, (list, tuple)):
        return _OBJECT + _SLOT * len(sequence) * times
    return 0


def _int_size(bits: int) -> int:
    return UNBOUNDED if bits > MAX_INT_BITS else 0


def method_size(method: object, args: list[Any], kwargs: dict[str, Any], limit: int) -> int:
    """Weight of calling a method of text, bytes or a number that can build far more than its
    receiver (``center``, ``ljust``, ``rjust``, ``zfill``, ``expandtabs``, ``replace``,
    ``join``, ``translate``, ``int.to_bytes``, ``dict.fromkeys``): builtin or ``Markup``'s own.
    May replace ``args[0]`` by a list of its items (read once, then handed to the real call)."""
    target = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if name == "fromkeys" and args:
        args[0] = list(args[0])
        return _OBJECT + 32 * len(args[0])
    if name == "to_bytes" and isinstance(target, int):
        return int(_argument(args, kwargs, 0, "length", 1))
    if not isinstance(target, str | bytes) or not args:
        return 0
    if name in ("center", "ljust", "rjust", "zfill"):
        return int(args[0])
    if name == "expandtabs":
        tabs = target.count(b"\t") if isinstance(target, bytes) else target.count("\t")
        return len(target) + tabs * int(args[0])
    if name == "replace" and len(args) >= 2:
        return replace_size(target, args[0], args[1], args[2] if len(args) > 2 else None)
    if name == "join":
        args[0] = list(args[0])
        return joined_size(args[0], target, limit)
    if name == "translate":
        return len(target) * _longest_value(args[0])
    return 0


def _argument(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _longest_value(table: Any) -> int:
    """The longest replacement in a ``str.translate`` table (bytes tables map 1:1)."""
    if isinstance(table, dict):
        return max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    return 1


def replace_size(s: Any, old: Any, new: Any, count: int | None) -> int:
    """``str.replace`` and ``bytes.replace``: every occurrence grows by the difference."""
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def joined_size(items: Collection[Any], separator: str | bytes, limit: int) -> int:
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        if total > limit:
            break
        total += measure(item, limit)
    return total


def layout_size(value: Any, indent: int, limit: int) -> int:
    """Upper bound of ``value`` printed one item per line, each line indented ``indent`` per
    level of nesting (``pprint``, ``tojson(indent=...)``)."""
    weight = measure(value, limit)
    if weight > limit:
        return weight
    return weight + (weight // _SLOT + 1) * (indent + 1) * _depth(value)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _urlize(a: dict[str, Any], _: int) -> int:
    text = str(a["value"])
    extra = len(str(a["target"] or "")) + len(str(a["rel"] or "")) + 64
    return 3 * len(text) + (len(text) // 4 + 1) * extra  # a link takes 4 characters at least


def _tojson(a: dict[str, Any], limit: int) -> int:
    indent = a["indent"]
    if not indent:
        return 0  # escaping at most sextuples the measured weight
    return layout_size(a["value"], len(indent) if isinstance(indent, str) else indent, limit)


Estimate = Callable[[dict[str, Any], int], int]
FILTER_SIZES: dict[str, Estimate] = {
    "join": lambda a, limit: joined_size(a["value"], str(a["d"]), limit),
    "replace": lambda a, _: replace_size(str(a["s"]), str(a["old"]), str(a["new"]), a["count"]),
    "indent": lambda a, _: len(str(a["s"])) + (str(a["s"]).count("\n") + 1) * _pad(a["width"]),
    "center": lambda a, _: int(a["width"]),
    "wordwrap": lambda a, _: _wrapped_size(str(a["s"]), int(a["width"]), a["wrapstring"]),
    "format": lambda a, _: len(str(a["value"])) + percent_width(str(a["value"])),
    "urlize": _urlize,
    "tojson": _tojson,
    "pprint": lambda a, limit: layout_size(a["value"], 1, limit),
    "batch": lambda a, _: _SLOT * int(a["linecount"]),
    "slice": lambda a, _: _OBJECT * int(a["slices"]),
    "sum": lambda a, _: 0 if isinstance(a["start"], int | float) else UNBOUNDED,
}


def _wrapped_size(s: str, width: int, wrapstring: str | None) -> int:
    # Two consecutive lines hold more than ``width`` characters, or a line break was there.
    breaks = 2 * len(s) // max(width, 1) + s.count("\n") + 1
    return len(s) + breaks * len(wrapstring or "\n")


def _pad(width: int | str) -> int:
    return len(width) if isinstance(width, str) else int(width)
