"""Pure arithmetic of the benchmark: percentiles, rates, ratios and their formatting. No I/O,
so the figures the report prints are unit-tested on their own."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile by linear interpolation between closest ranks (the
    method numpy calls ``linear``). Raises ``ValueError`` for no values or a bad fraction."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be between 0 and 1")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """Latency summary in seconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Latency | None:
    """p50/p95/p99/max of ``values``; ``None`` when there are none."""
    if not values:
        return None
    return Latency(
        count=len(values),
        p50=percentile(values, 0.50),
        p95=percentile(values, 0.95),
        p99=percentile(values, 0.99),
        max=max(values),
    )


def latencies(published: Mapping[str, float], accepted: Mapping[str, float]) -> list[float]:
    """``accepted[id] - published[id]`` for every id present in both (seconds)."""
    return [accepted[key] - start for key, start in published.items() if key in accepted]


def rate(count: int, start: float, end: float) -> float:
    """Events per second over ``[start, end]``; 0.0 when nothing happened or the window is
    empty (a rate from a zero-length window would be meaningless, not infinite)."""
    if count <= 0 or end <= start:
        return 0.0
    return count / (end - start)


def per_thousand(total: float, count: int) -> float:
    """``total`` per 1,000 events (CPU seconds per 1,000 emails); 0.0 for no events."""
    return 0.0 if count <= 0 else total * 1000.0 / count


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, ``None`` when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def format_ratio(value: float | None) -> str:
    """``12.3x``, ``0.45x`` or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def format_rate(value: float) -> str:
    """A rate with a precision that suits its size: ``1234``, ``85.3``, ``0.42``."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ms(seconds: float | None) -> str:
    """Seconds as milliseconds (``12.3 ms``, ``1,234 ms``); ``n/a`` for ``None``."""
    if seconds is None:
        return "n/a"
    millis = seconds * 1000.0
    return f"{millis:,.0f} ms" if millis >= 100 else f"{millis:.1f} ms"


def format_mib(size_bytes: int) -> str:
    """Bytes as MiB with one decimal (``87.5 MiB``)."""
    return f"{size_bytes / 1048576:.1f} MiB"
