"""The Jinja2 sandbox templates render in: immutable, strict, and with memory guards.

``ImmutableSandboxedEnvironment`` stops attribute escapes (``__class__``, ``__globals__``) and
mutation, but not memory blow-ups: ``{{ 'a' * 10**9 }}`` is one expression yielding one chunk,
so no streaming cap sees it coming (RELIABILITY rule 13). ``GuardedEnvironment`` refuses, before
computing, every operation whose result would exceed ``limit`` characters:

- the ``*``, ``**``, ``%`` and ``+`` operators (intercepted binops, which also disables their
  compile-time constant folding);
- the ``~`` operator and every captured block (``{% set %}...{% endset %}``, macros, calls)
  through a code generator and ``concat`` that measure the parts first;
- size-taking filters (``join``, ``replace``, ``indent``, ``center``, ``wordwrap``,
  ``format``) and ``str`` methods (``join``, ``replace``, ``center``, ``ljust``, ``rjust``,
  ``zfill``, ``expandtabs``, ``format``);
- ``lipsum`` (its paragraph count is unbounded) is removed.

Any other call or filter result is checked after the fact, so no value grows past the limit by
more than one bounded step. CPU time is not bounded (an empty nested loop spins): templates come
from the operator's template service, and the sandbox is the defence in depth behind it.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Callable, Iterable, Sized
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_MAX_POWER_BITS = 4096
_PERCENT_SPEC = re.compile(r"%(?:%|(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?)")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")
_UNBOUNDED = 1 << 62  # an estimate meaning "caller-controlled width": always refused


class OutputTooLarge(SecurityError):
    """A template operation would produce more than the renderer's size limit."""


def _measure(items: Iterable[object], limit: int) -> int:
    total = 0
    for item in items:
        total += len(item) if isinstance(item, str) else len(str(item))
        if total > limit:
            break
    return total


def _percent_width(fmt: str) -> int:
    """The largest width or precision in a %-format string (``*`` counts as unbounded)."""
    widest = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*":
                return _UNBOUNDED
            widest = max(widest, int(group or 0))
    return widest


def _brace_width(fmt: str) -> int:
    """The largest number in a ``str.format`` spec (a nested ``{}`` spec is unbounded)."""
    if _NESTED_SPEC.search(fmt):
        return _UNBOUNDED
    numbers = (int(n) for spec in _BRACE_SPEC.findall(fmt) for n in re.findall(r"\d+", spec))
    return max(numbers, default=0)


def _replace_size(s: str, old: str, new: str, count: int | None) -> int:
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _indent_size(s: str, width: int | str) -> int:
    pad = len(width) if isinstance(width, str) else int(width)
    return len(s) + (s.count("\n") + 1) * pad


def _wordwrap_size(s: str, width: int, wrapstring: str | None) -> int:
    breaks = len(s) // max(int(width), 1) + s.count("\n") + 1
    return len(s) + breaks * len(wrapstring or "\n")


def _join_size(args: dict[str, Any], key: str, sep: str, limit: int) -> int:
    items = list(args[key])  # materialized once, then handed to the real join
    args[key] = items
    return _measure(items, limit) + len(sep) * max(len(items) - 1, 0)


_Estimate = Callable[[dict[str, Any], int], int]
_FILTER_SIZES: dict[str, _Estimate] = {
    "join": lambda a, limit: _join_size(a, "value", str(a["d"]), limit),
    "replace": lambda a, _: _replace_size(str(a["s"]), str(a["old"]), str(a["new"]), a["count"]),
    "indent": lambda a, _: _indent_size(str(a["s"]), a["width"]),
    "center": lambda a, _: int(a["width"]),
    "wordwrap": lambda a, _: _wordwrap_size(str(a["s"]), a["width"], a["wrapstring"]),
    "format": lambda a, _: _percent_width(str(a["value"])),
}


def _method_size(method: object, args: list[Any], limit: int) -> int:
    """Estimated result size of calling a ``str`` method; may materialize ``args[0]``."""
    target = getattr(method, "__self__", None)
    if not isinstance(method, types.BuiltinMethodType) or not isinstance(target, str):
        return 0
    name = method.__name__
    if name in ("center", "ljust", "rjust", "zfill") and args:
        return int(args[0])
    if name == "expandtabs":
        return len(target) + target.count("\t") * int(args[0] if args else 8)
    if name == "replace" and len(args) >= 2:
        return _replace_size(target, args[0], args[1], args[2] if len(args) > 2 else None)
    if name == "join" and args:
        holder = {"items": args[0]}
        size = _join_size(holder, "items", target, limit)
        args[0] = holder["items"]
        return size
    return 0


def _require(size: int, limit: int) -> None:
    if size > limit:
        raise OutputTooLarge("template operation result too large")


def _fits(value: Any, limit: int) -> Any:
    if isinstance(value, Sized) and not isinstance(value, dict):
        _require(len(value), limit)
    return value


def _guard_filter(name: str, func: Callable[..., Any], limit: int) -> Callable[..., Any]:
    estimate = _FILTER_SIZES.get(name)
    signature = inspect.signature(func) if estimate is not None else None

    @functools.wraps(func)  # keeps jinja_pass_arg, so context arguments still arrive
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if estimate is not None and signature is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            _require(estimate(bound.arguments, limit), limit)
            args, kwargs = bound.args, bound.kwargs
        return _fits(func(*args, **kwargs), limit)

    return guarded


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802
        """``a ~ b``: the parts are measured by ``environment.guard_parts`` before joining."""
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.guard_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """Immutable sandbox, ``StrictUndefined``, no value over ``limit`` characters."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, limit: int, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=StrictUndefined, auto_reload=False)
        self.limit = limit
        self.globals.pop("lipsum", None)
        self.filters = {name: _guard_filter(name, f, limit) for name, f in self.filters.items()}
        self.concat = self._checked_concat  # type: ignore[method-assign]

    def _checked_concat(self, parts: Iterable[str]) -> str:
        items = list(parts)
        _require(_measure(items, self.limit), self.limit)
        return "".join(items)

    def guard_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _require(_measure(parts, self.limit), self.limit)
        return parts

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _require(self._binop_size(operator, left, right), self.limit)
        return _fits(super().call_binop(context, operator, left, right), self.limit)

    def _binop_size(self, operator: str, left: Any, right: Any) -> int:
        sized = (str, list, tuple)
        if operator == "*" and isinstance(left, sized) and isinstance(right, int):
            return len(left) * right
        if operator == "*" and isinstance(right, sized) and isinstance(left, int):
            return len(right) * left
        if operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            return len(left) + len(right)
        if operator == "%" and isinstance(left, str):
            return _percent_width(left)
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            bits = right * abs(left).bit_length() if abs(left) > 1 else 0
            return _UNBOUNDED if bits > _MAX_POWER_BITS else 0
        return 0

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        arguments = list(args)
        _require(_method_size(__obj, arguments, __self.limit), __self.limit)
        result = super().call(__context, __obj, *arguments, **kwargs)
        return _fits(result, __self.limit)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _brace_width(value.__self__) > self.limit:

            def refuse(*args: Any, **kwargs: Any) -> str:
                raise OutputTooLarge("format width too large")

            return refuse
        return wrapped
