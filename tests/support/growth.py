"""How a function's running time grows with its input (RELIABILITY rule 19).

``assert_linear(run, make)`` times ``run(make(n))`` at n, 2n, 4n and 8n and fails when the time
grows faster than n ** 1.5 between n and 8n (linear gives 8x, n log n about 10x, quadratic 64x):
a check of the shape of the curve, not of any fixed time, so it holds on a slow or busy machine.

- CPU time of this process (``time.process_time``), the garbage collector off, the minimum of
  a few repetitions: noise from other processes and from collections mostly drops out;
- n starts at ``start`` and doubles until one run costs ``floor`` seconds, so the smallest
  measurement is well above the clock's resolution and a quadratic shape shows within a few
  hundred milliseconds instead of hanging the suite;
- inputs are built before timing, and each repetition gets the same input.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

STEPS = (1, 2, 4, 8)
MAX_EXPONENT = 1.5  # generous: linear is 1, n log n about 1.1 here, quadratic 2


@dataclass(frozen=True)
class Curve:
    sizes: tuple[int, ...]
    seconds: tuple[float, ...]

    @property
    def exponent(self) -> float:
        """k in time ~ n ** k, from the first and the last point."""
        ratio = self.seconds[-1] / max(self.seconds[0], 1e-9)
        return math.log(max(ratio, 1e-9)) / math.log(self.sizes[-1] / self.sizes[0])

    def __str__(self) -> str:
        points = ", ".join(
            f"{n}: {s * 1000:.1f} ms" for n, s in zip(self.sizes, self.seconds, strict=True)
        )
        return f"{points} (exponent {self.exponent:.2f})"


def _cost(run: Callable[[T], object], value: T, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.process_time()
        run(value)
        best = min(best, time.process_time() - started)
    return best


def measure_growth(
    run: Callable[[T], object],
    make: Callable[[int], T],
    *,
    start: int = 64,
    floor: float = 0.004,
    limit: int = 1 << 24,
    repeats: int = 3,
) -> Curve:
    """The curve of ``run(make(n))`` over n, 2n, 4n, 8n, with n calibrated as above."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        n = start
        while n < limit and _cost(run, make(n), 1) < floor:
            n *= 2
        sizes = tuple(n * step for step in STEPS)
        seconds = tuple(_cost(run, make(size), repeats) for size in sizes)
    finally:
        if enabled:
            gc.enable()
    return Curve(sizes, seconds)


def assert_linear(
    run: Callable[[T], object], make: Callable[[int], T], *, start: int = 64, limit: int = 1 << 24
) -> Curve:
    """Fail when ``run``'s time grows faster than ``n ** MAX_EXPONENT``; returns the curve."""
    curve = measure_growth(run, make, start=start, limit=limit)
    assert curve.exponent <= MAX_EXPONENT, f"super-linear: {curve}"
    return curve
