"""Callback retry policy: which answers are final, full-jitter backoff and Retry-After parsing
(pure functions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from email_worker.callbacks.backoff import (
    BACKOFF_CAP,
    MIN_DELAY,
    backoff,
    is_final,
    retry_after_seconds,
)
from schemas.deadletter import rfc3339


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (400, True),
        (401, True),
        (404, True),
        (410, True),
        (422, True),
        (499, True),
        (408, False),
        (425, False),
        (429, False),
        (None, False),  # no answer: timeout, refused, reset
        (302, False),
        (500, False),
        (503, False),
        (200, False),
    ],
)
def test_a_4xx_is_final_but_408_425_429(status: int | None, final: bool) -> None:
    assert is_final(status) is final


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [
        (1, 5.0),
        (2, 10.0),
        (3, 20.0),
        (8, 640.0),
        (10, 2560.0),
        (11, BACKOFF_CAP),
        (500, BACKOFF_CAP),
    ],
)
def test_backoff_stays_under_the_exponential_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff(attempt, rng) for _ in range(2000)]
    assert all(MIN_DELAY <= delay <= ceiling for delay in delays)
    # Full jitter spreads over the whole range, not a narrow band near the ceiling.
    if ceiling > 4 * MIN_DELAY:
        assert min(delays) < ceiling * 0.25
        assert max(delays) > ceiling * 0.75


class _Fixed(random.Random):
    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def test_backoff_uses_the_random_draw_and_floors_it() -> None:
    assert backoff(4, _Fixed(0.5)) == 20.0
    assert backoff(4, _Fixed(1.0)) == 40.0
    assert backoff(4, _Fixed(0.0)) == MIN_DELAY


def test_backoff_grows_exponentially_until_the_cap() -> None:
    ceilings = [backoff(attempt, _Fixed(1.0)) for attempt in range(1, 13)]
    assert ceilings[:4] == [5.0, 10.0, 20.0, 40.0]
    assert ceilings[-1] == BACKOFF_CAP
    assert ceilings == sorted(ceilings)


NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", MIN_DELAY),
        ("999999", BACKOFF_CAP),
        ("Mon, 23 Nov 2026 10:01:30 GMT", 90.0),
        ("Mon, 23 Nov 2026 09:00:00 GMT", MIN_DELAY),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


def test_rfc3339_is_utc_with_z() -> None:
    moment = datetime.fromisoformat("2026-11-23T12:00:00.750+02:00")
    assert rfc3339(moment) == "2026-11-23T10:00:00Z"
