"""How a micro-benchmark is timed: CPU (``time.process_time``) and wall time per operation, for
our part and its library alternative, round by round, and the median of the rounds.

The two sides alternate in short slices within each round (ours, the library, the library,
ours, ...: ten slices of each per round), so a drift of the machine's speed (other processes
sharing the cores) falls on both alike; a round's figure is its slices summed. Each side is
warmed up once
before the first round (connections opened, statements prepared, caches filled), and the
garbage collector is run before every timed batch, so no side pays for the other's garbage.
A side may name another process whose CPU it causes (the Postgres backend of its connection):
that CPU is added to the side's own and also shown apart.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Op = Callable[[], object]


@dataclass(frozen=True)
class Side:
    """One way of doing the work: ``op`` does ``per_call`` operations per call.
    ``other_cpu`` reads the cumulative CPU seconds of a process the side makes work."""

    label: str
    op: Op
    per_call: int = 1
    other_cpu: Callable[[], float] | None = None


@dataclass(frozen=True)
class Measure:
    """A side's medians over the rounds, in microseconds per operation. ``cpu_us`` includes
    ``other_cpu_us`` (the other process's share) when the side names one."""

    label: str
    cpu_us: float
    wall_us: float
    other_cpu_us: float | None
    rounds_cpu_us: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """Our part against one library alternative on one input (``case``)."""

    part: str
    case: str
    ours: Measure
    library: Measure
    equivalent: str  # how the two results were found equivalent
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ratio(self) -> float:
        """Library CPU / our CPU per operation: above 1, ours is cheaper."""
        return self.library.cpu_us / self.ours.cpu_us if self.ours.cpu_us else float("inf")

    @property
    def gain(self) -> float:
        """The share of the library's CPU that ours saves (negative: ours costs more)."""
        return 1 - self.ours.cpu_us / self.library.cpu_us if self.library.cpu_us else 0.0


@dataclass
class _Totals:
    """One side's sums over the current round, and its per-operation figure of each round."""

    calls: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    other_s: float = 0.0
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)

    def close_round(self, per_call: int) -> None:
        ops = self.calls * per_call
        self.cpu.append((self.cpu_s + self.other_s) / ops * 1e6)
        self.wall.append(self.wall_s / ops * 1e6)
        self.other.append(self.other_s / ops * 1e6)
        self.calls, self.cpu_s, self.wall_s, self.other_s = 0, 0.0, 0.0, 0.0


def _timed(side: Side, calls: int, totals: _Totals) -> None:
    gc.collect()
    other_start = side.other_cpu() if side.other_cpu else 0.0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(calls):
        side.op()
    totals.cpu_s += time.process_time() - cpu_start
    totals.wall_s += time.perf_counter() - wall_start
    totals.other_s += (side.other_cpu() - other_start) if side.other_cpu else 0.0
    totals.calls += calls


def _measure(side: Side, totals: _Totals) -> Measure:
    return Measure(
        label=side.label,
        cpu_us=statistics.median(totals.cpu),
        wall_us=statistics.median(totals.wall),
        other_cpu_us=statistics.median(totals.other) if side.other_cpu else None,
        rounds_cpu_us=tuple(totals.cpu),
    )


SLICES = 10


def measure_pair(ours: Side, library: Side, *, calls: int, rounds: int) -> tuple[Measure, Measure]:
    """Both sides timed over ``rounds`` rounds of ``calls`` calls each, in alternating slices."""
    if calls < 1 or rounds < 1:
        raise ValueError("calls and rounds must be at least 1")
    ours.op()  # warm-up: not timed
    library.op()
    sides, totals = (ours, library), (_Totals(), _Totals())
    slices = min(SLICES, calls)
    sizes = [calls // slices + (1 if k < calls % slices else 0) for k in range(slices)]
    for _ in range(rounds):
        for number, size in enumerate(sizes):
            for index in (0, 1) if number % 2 == 0 else (1, 0):
                _timed(sides[index], size, totals[index])
        for side, total in zip(sides, totals, strict=True):
            total.close_round(side.per_call)
    return _measure(ours, totals[0]), _measure(library, totals[1])


def format_us(value: float) -> str:
    """Microseconds, with the precision the figure deserves."""
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"
