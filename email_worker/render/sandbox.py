"""The Jinja2 sandbox templates render in: immutable, strict, and bounded while it runs.

``ImmutableSandboxedEnvironment`` stops attribute escapes (``__class__``, ``__globals__``) and
mutation, but bounds neither memory nor time (RELIABILITY rule 13). ``GuardedEnvironment``
passes every operation a template can build something with through the render's budget
(``email_worker.render.budget``), as it runs:

- values a template builds are measured and charged: operators (``*``, ``**``, ``%``, ``+``
  are intercepted binops), every call (functions, methods, macros), every filter (replaced in
  ``env.filters``), every list, tuple and dict literal, every ``~`` and every captured block
  (``{% set %}...{% endset %}``, macros, ``{% filter %}``), and every value printed
  (``finalize``, or ``guard_escaped`` with autoescaping). Operations whose result can dwarf
  their operands are estimated first and refused before they run
  (``email_worker.render.sizes``); ``email_worker.render.compiler`` writes the guards into the
  compiled code;
- every loop iteration (recursive ``loop(...)`` calls included) and every iterator a filter
  returns is charged to the budget, so nested loops with no output stop at the time budget;
- compiling is bounded too: a source of more than ``MAX_TEMPLATE_TOKENS`` tokens is refused
  after lexing that many (compiling 100,000 placeholders cost 6 s and 900 MB).

``lipsum`` is removed (its paragraph count is unbounded).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import StrictUndefined
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from email_worker.render.budget import (
    BudgetExceeded,
    OutputTooLarge,
    active,
    measure,
    require,
)
from email_worker.render.compiler import GuardedCodeGenerator
from email_worker.render.sizes import FILTER_SIZES, binop_size, brace_width, method_size

MAX_TEMPLATE_TOKENS = 20_000  # lexer tokens per part: ~3,000 placeholders, ~0.5 s to compile
_CONTEXT_NAMES = frozenset({"eval_ctx", "environment", "context"})
_ITEM = 64  # charged per item a filter's iterator yields (batch and slice build new lists)
# Types of the values templates use most, none of them an iterator: no abstract-class check.
_PLAIN = frozenset({str, Markup, int, float, bool, type(None), list, tuple, dict})
# Every attribute a plain dict has (its class's and object's): a builtin type, fixed for good.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class TemplateTooComplex(BudgetExceeded):
    detail = f"template too large to compile (more than {MAX_TEMPLATE_TOKENS} tokens)"


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """Immutable sandbox, ``StrictUndefined``, no value over ``limit``, and every operation
    charged to the active render budget (``template_budget.render_budget``)."""

    code_generator_class = GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, limit: int, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            auto_reload=False,
            finalize=self.keep,  # every printed value
        )
        self.limit = limit
        self.globals.pop("lipsum", None)
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}
        self.concat = self._checked_concat  # type: ignore[method-assign]

    def checked_template(self, source: str) -> Any:
        """Compile ``source`` after counting its tokens (at most ``MAX_TEMPLATE_TOKENS`` are
        lexed). Raises ``TemplateTooComplex`` or Jinja's ``TemplateSyntaxError``."""
        for count, _ in enumerate(self.lex(source)):
            if count >= MAX_TEMPLATE_TOKENS:
                raise TemplateTooComplex(TemplateTooComplex.detail)
        return self.from_string(source)

    def keep(self, value: Any) -> Any:
        """``value``, after refusing it if it weighs more than the limit and charging it."""
        weight = len(value) if isinstance(value, str) else measure(value, self.limit)
        if weight > self.limit:
            raise OutputTooLarge(OutputTooLarge.detail)
        budget = active()
        if budget is not None:
            budget.charge(weight)
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` as the sandbox reads it: the attribute, else the item. A plain dict
        (the variables are decoded JSON) has only its class's attributes, so for any other name
        the item is what the sandbox would return: read directly, without raising and catching
        the AttributeError first (about a microsecond for every ``item.title`` in a loop)."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass  # the sandbox's own lookup makes the undefined value
        return super().getattr(obj, attribute)

    def guard_escaped(self, value: Any) -> Any:
        """A printed value, autoescaping on: ``keep`` it, then escape it as
        ``markupsafe.escape`` does. Plain text (nearly every value) is escaped by the same five
        replacements markupsafe makes, and stays ``str``: output chunks are only ever joined
        (captured blocks and macros wrap the joined text in ``Markup`` themselves)."""
        if type(value) is not str:
            return escape(self.keep(value))
        weight = len(value)
        if weight > self.limit:
            raise OutputTooLarge(OutputTooLarge.detail)
        budget = active()
        if budget is not None:
            budget.charge(weight)
        return (
            value.replace("&", "&amp;")
            .replace(">", "&gt;")
            .replace("<", "&lt;")
            .replace("'", "&#39;")
            .replace('"', "&#34;")
        )

    def guard_value(self, value: Any) -> Any:
        return self.keep(value)

    def guard_iter(self, iterable: Iterable[Any], cost: int = 8) -> Iterator[Any]:
        """Yields ``iterable``'s items, charging ``cost`` for each (a loop's reference to it),
        by 16 at a time: a loop iteration is the cheapest step a template can repeat."""
        budget = active()
        if budget is None:
            yield from iterable
            return
        pending = 0
        for item in iterable:
            pending += 1
            if pending == 16:
                budget.charge(16 * cost)
                pending = 0
            yield item

    def guard_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        self.keep(list(parts))
        return parts

    def _checked_concat(self, parts: Iterable[str]) -> str:
        items = list(parts)
        self.keep(items)
        return "".join(items)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        require(binop_size(operator, left, right), self.limit)
        return self.keep(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        arguments = list(args)
        if isinstance(__obj, LoopContext) and arguments:  # loop(children): a recursive loop
            arguments[0] = __self.guard_iter(arguments[0])
        require(method_size(__obj, arguments, kwargs, __self.limit), __self.limit)
        result = super().call(__context, __obj, *arguments, **kwargs)
        return __self._kept_result(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and brace_width(value.__self__) > self.limit:

            def refuse(*args: Any, **kwargs: Any) -> str:
                raise OutputTooLarge("format width too large")

            return refuse
        return wrapped

    def _kept_result(self, result: Any) -> Any:
        if _is_iterator(result):  # map, select, batch, slice...: lazily, per item
            return self.guard_iter(result, _ITEM)
        return self.keep(result)

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        estimate = FILTER_SIZES.get(name)
        if estimate is None:

            @functools.wraps(func)  # keeps jinja_pass_arg: context arguments still arrive
            def kept(*args: Any, **kwargs: Any) -> Any:
                return self._kept_result(func(*args, **kwargs))

            return kept
        names, defaults = _parameters(func)
        # An async-variant filter reports its sync twin's signature, without the context
        # argument it is nevertheless passed first.
        passed = getattr(func, "jinja_pass_arg", None) is not None
        skip = int(passed and (names[:1] or [""])[0] not in _CONTEXT_NAMES)
        data = int(passed)  # where the filtered value is in the arguments
        limit = self.limit

        @functools.wraps(func)
        def estimated(*args: Any, **kwargs: Any) -> Any:
            if len(args) > data and _is_iterator(args[data]):  # read it once only
                args = (*args[:data], list(args[data]), *args[data + 1 :])
            values = dict(defaults)
            values.update(zip(names, args[skip:], strict=False))
            if kwargs:
                values.update(kwargs)
            require(estimate(values, limit), limit)
            return self._kept_result(func(*args, **kwargs))

        return estimated


def _is_iterator(value: Any) -> bool:
    return type(value) not in _PLAIN and isinstance(value, Iterator)


def _parameters(func: Callable[..., Any]) -> tuple[list[str], dict[str, Any]]:
    """The names of ``func``'s leading positional parameters, and every default (binding by
    hand: ``inspect.Signature.bind`` cost more than most filters)."""
    names: list[str] = []
    defaults: dict[str, Any] = {}
    for parameter in inspect.signature(func).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is not parameter.KEYWORD_ONLY:
            names.append(parameter.name)
        if parameter.default is not parameter.empty:
            defaults[parameter.name] = parameter.default
    return names, defaults
