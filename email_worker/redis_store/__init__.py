"""Redis, the rate limiter's shared store when ``REDIS_URL`` is set (CONTRACT section 12): the
only package that imports redis-py."""

from __future__ import annotations

from email_worker.redis_store.rate_store import RedisRateStore

__all__ = ["RedisRateStore"]
