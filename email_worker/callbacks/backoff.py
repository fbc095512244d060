"""Whether and when a failed callback is tried again: a 4xx answer is final (but 408, 425 and
429), the rest is retried with full-jitter exponential backoff, or after the gateway's
``Retry-After`` when it sends one (pure functions)."""

from __future__ import annotations

import random
from datetime import UTC
from email.utils import parsedate_to_datetime

BACKOFF_BASE = 5.0
BACKOFF_CAP = 3600.0
MIN_DELAY = 1.0  # full jitter can draw ~0: never hammer a failing gateway in a tight loop
# 4xx answers that mean "not now" rather than "never": timeout, too early, too many requests.
RETRYABLE_4XX = frozenset({408, 425, 429})


def is_final(status: int | None) -> bool:
    """True when an answer refuses the callback for good (CONTRACT section 7): any 4xx but
    408, 425 and 429 (410 Gone included). No answer (None), 3xx and 5xx are retried."""
    return status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX


def backoff(attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): full jitter, uniform in
    ``[0, min(cap, base * 2**(attempt-1))]`` with base 5 s and cap 1 h, floored at 1 s."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(max(attempt, 1) - 1, 30))
    return max(MIN_DELAY, rng.uniform(0, ceiling))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` value (delta seconds or an HTTP date) as seconds from ``now``,
    clamped to ``[1 s, 1 h]``; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(BACKOFF_CAP, max(MIN_DELAY, seconds))
