"""The benchmark's pure arithmetic: percentiles, rates, ratios and their formatting."""

from __future__ import annotations

import pytest

from benchmarks import stats


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([5.0], 0.99, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        ([float(n) for n in range(1, 101)], 0.99, 99.01),
        ([float(n) for n in range(1, 101)], 0.95, 95.05),
    ],
)
def test_percentile_interpolates_between_closest_ranks(
    values: list[float], fraction: float, expected: float
) -> None:
    assert stats.percentile(values, fraction) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "fraction"), [([], 0.5), ([1.0], 1.5), ([1.0], -0.1)])
def test_percentile_rejects_no_values_and_bad_fractions(
    values: list[float], fraction: float
) -> None:
    with pytest.raises(ValueError):
        stats.percentile(values, fraction)


def test_summarize_reports_percentiles_and_max() -> None:
    summary = stats.summarize([float(n) for n in range(1, 1001)])
    assert summary is not None
    assert summary.count == 1000
    assert summary.p50 == pytest.approx(500.5)
    assert summary.p99 == pytest.approx(990.01)
    assert summary.max == 1000.0
    assert stats.summarize([]) is None


def test_latencies_pair_publish_and_accept_by_request_id() -> None:
    published = {"a": 10.0, "b": 11.0, "lost": 12.0}
    accepted = {"a": 10.25, "b": 12.5, "stray": 1.0}
    assert sorted(stats.latencies(published, accepted)) == [0.25, 1.5]


@pytest.mark.parametrize(
    ("count", "start", "end", "expected"),
    [(1000, 0.0, 2.0, 500.0), (0, 0.0, 2.0, 0.0), (10, 5.0, 5.0, 0.0), (10, 6.0, 5.0, 0.0)],
)
def test_rate_is_zero_for_empty_windows(
    count: int, start: float, end: float, expected: float
) -> None:
    assert stats.rate(count, start, end) == expected


def test_per_thousand_and_ratio() -> None:
    assert stats.per_thousand(3.0, 2000) == pytest.approx(1.5)
    assert stats.per_thousand(3.0, 0) == 0.0
    assert stats.ratio(1200.0, 80.0) == pytest.approx(15.0)
    assert stats.ratio(1.0, 0.0) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(15.0, "15.0x"), (0.4567, "0.46x"), (9.994, "9.99x"), (123.45, "123.5x"), (None, "n/a")],
)
def test_format_ratio(value: float | None, text: str) -> None:
    assert stats.format_ratio(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0123, "12.3 ms"), (1.2345, "1,234 ms"), (0.1, "100 ms"), (None, "n/a")],
)
def test_format_ms(seconds: float | None, text: str) -> None:
    assert stats.format_ms(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(1234.4, "1,234"), (85.34, "85.3"), (0.421, "0.42")])
def test_format_rate(value: float, text: str) -> None:
    assert stats.format_rate(value) == text


def test_format_mib() -> None:
    assert stats.format_mib(150 * 1024 * 1024) == "150.0 MiB"
