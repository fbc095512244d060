"""What one render may spend: the size of any value, the memory of all of them, the CPU time.

The Jinja2 sandbox stops attribute escapes but bounds neither memory nor time (RELIABILITY rule
13): ``[[1] * 1000] * 1000`` is small to build and a gigabyte to print, squaring a big integer
doubles it each time, and an empty nested loop spins for ever. ``email_worker.render.sandbox`` calls
into this module at every operation a template can use to build something, while it runs:

- ``measure`` weighs a value: characters of text, digits of numbers, and a few bytes per
  container slot (shared parts counted each time they appear, as printing would). Every value a
  template builds must weigh at most ``limit``, so printing, comparing or serialising any value
  costs O(``limit``) whatever its shape; ``measure`` stops as soon as it passes the limit.
- ``RenderBudget.charge`` adds each built value's weight to what the render has spent, which may
  not pass ``allowance`` (memory: values freed in between are not given back, so a loop cannot
  allocate a gigabyte a megabyte at a time).
- every charge (and every 16 loop iterations) counts towards the next clock check: every few
  dozen (sooner after heavy values) it compares the thread's CPU time with the deadline.

The budget of the render in progress lives in a context variable set by ``render_budget``; with
none set (compile-time constant folding), only the per-value limit applies.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, KeysView, ValuesView
from contextvars import ContextVar
from itertools import chain
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

_SLOT = 8  # a reference in a list, tuple or set
_ENTRY = 32  # a key and a value in a dict, with its hash
_OBJECT = 64  # a container's own header
_SCALAR = 8  # a float, None, a bool, an opaque object (a macro, a loop, a range, an iterator)
_CHECK_EVERY = 64  # ticks between two reads of the thread's CPU clock (~0.6 µs each)
UNBOUNDED = 1 << 62  # a weight that no limit admits


class BudgetExceeded(SecurityError):
    """A template went past one of its render's bounds. ``detail`` names which one."""

    detail = "template exceeded its budget"


class OutputTooLarge(BudgetExceeded):
    detail = "rendered body too large"


class MemoryBudgetExceeded(BudgetExceeded):
    detail = "template built more than its memory budget"


class TimeBudgetExceeded(BudgetExceeded):
    detail = "template ran longer than its time budget"


def measure(value: Any, limit: int) -> int:
    """The weight of ``value``: exact for text, an upper bound of its printed size for the
    rest. Stops early (returning more than ``limit``) once it is over ``limit``: the cost is
    O(min(weight, limit)). Iterative, so a deeply nested value cannot exhaust the stack."""
    if isinstance(value, str):  # nearly every value measured
        return len(value)
    kind = type(value)
    if kind is float or value is None:  # prices, missing values: no need to walk anything
        return _SCALAR
    if kind is int:
        digits: int = value.bit_length() // 3 + 1
        return digits
    weight = 0
    stack = [value]
    while stack and weight <= limit:
        item = stack.pop()
        if type(item) is str:  # most leaves (the keys and values of decoded JSON): no call
            weight += len(item)
            continue
        own, parts = _weigh(item)
        weight += own
        if parts is not None and weight <= limit:
            stack.extend(parts)
    return weight


_CONTAINERS = (list, tuple, set, frozenset)
_VIEWS = (KeysView, ValuesView)  # abstract classes: checked after the concrete types (slower)


def _weigh(item: Any) -> tuple[int, Iterable[Any] | None]:
    """The weight of ``item`` itself, and the parts it holds."""
    if isinstance(item, (str, bytes)):
        return len(item), None
    if isinstance(item, int):
        return item.bit_length() // 3 + 1, None  # decimal digits, over-estimated
    if isinstance(item, _CONTAINERS):
        return _OBJECT + _SLOT * len(item), item
    if isinstance(item, dict):
        return _OBJECT + _ENTRY * len(item), chain(item.keys(), item.values())
    if isinstance(item, float) or item is None:
        return _SCALAR, None
    if isinstance(item, _VIEWS):
        return _OBJECT + _SLOT * len(item), item
    if isinstance(item, Namespace):  # printed with all its attributes
        attributes = getattr(item, "_Namespace__attrs", None)
        return (_OBJECT, (attributes,)) if isinstance(attributes, dict) else (UNBOUNDED, None)
    return _SCALAR, None


def require(weight: int, limit: int, error: type[BudgetExceeded] = OutputTooLarge) -> None:
    if weight > limit:
        raise error(error.detail)


class RenderBudget:
    """The spending of one render. Not thread-safe: one render runs in one thread."""

    __slots__ = ("_credit", "allowance", "deadline", "seconds", "spent")

    def __init__(self, allowance: int, seconds: float) -> None:
        self.allowance = allowance
        self.seconds = seconds
        # Set at the first clock check: reading the thread's CPU clock is a system call, and
        # most renders end before their 64th operation. What runs before that first check
        # is at most 64 light operations or one heavy one.
        self.deadline: float | None = None
        self.spent = 0
        self._credit = _CHECK_EVERY

    def charge(self, weight: int) -> None:
        """Count a built value (or a batch of loop iterations) of ``weight``. Raises
        ``MemoryBudgetExceeded`` past the allowance, ``TimeBudgetExceeded`` past the deadline
        (the clock is read every ``_CHECK_EVERY`` charges, sooner after heavy ones)."""
        self.spent += weight
        if self.spent > self.allowance:
            raise MemoryBudgetExceeded(MemoryBudgetExceeded.detail)
        self._credit -= 1 + (weight >> 12)  # heavy values bring the next clock check closer
        if self._credit <= 0:
            self._check_clock()

    def _check_clock(self) -> None:
        self._credit = _CHECK_EVERY
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + self.seconds
        elif now > self.deadline:
            raise TimeBudgetExceeded(TimeBudgetExceeded.detail)


_ACTIVE: ContextVar[RenderBudget | None] = ContextVar("render_budget", default=None)


# The budget of the render running in this context, if any (``active()``): the context
# variable's own method, so the call runs no Python frame (it is made for every value).
active = _ACTIVE.get


class render_budget:  # noqa: N801 - used like a function: ``with render_budget(...):``
    """Make a fresh budget the active one for the duration of the block (a class, not a
    ``contextmanager`` generator: this runs for every email)."""

    __slots__ = ("_token", "budget")

    def __init__(self, allowance: int, seconds: float) -> None:
        self.budget = RenderBudget(allowance, seconds)

    def __enter__(self) -> RenderBudget:
        self._token = _ACTIVE.set(self.budget)
        return self.budget

    def __exit__(self, *exc_info: object) -> None:
        _ACTIVE.reset(self._token)
