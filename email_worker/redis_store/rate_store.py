"""``RedisRateStore``: the rate limiter's shared store in Redis (``REDIS_URL``), one Lua script
per call, so each reservation or throttle is atomic on the server and one round trip.

Keys (all share the hash tag ``{rates}``, so a Redis Cluster keeps them on one slot):

    <prefix>:{rates}:route:<route>   hash: tat, base, at, paused (epoch seconds); expires after a
                                     day unused
    <prefix>:{rates}:throttled       sorted set of throttled routes, scored by the later of
                                     their last throttle and their pause's end

Times come from the Redis server's ``TIME`` (replicas never compare their clocks), as
decimal strings with microseconds (a Lua number returned as a reply would be truncated to an
integer). The arithmetic is ``pacing.store.reserve_slots`` and ``pacing.adaptive`` in Lua
(``scripts.py``); the integration tests hold the two to the same answers. Deployments that must
not share budgets use different Redis databases (``redis://host/1``). Raises
``DeferredFailure`` when Redis cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from email_worker.pacing.adaptive import Recovery, RouteState
from email_worker.pacing.store import Reservation, Snapshot, Throttle
from email_worker.redis_store.scripts import PUSH, RESERVE, SNAPSHOT, THROTTLE
from schemas.failures import DeferredFailure, Reason

DAY = 86_400


def _number(value: object) -> float | None:
    return None if value in (None, "", b"") else float(str(value))


class RedisRateStore:
    """A ``RateStore`` over one Redis client (closed by ``close``)."""

    def __init__(
        self,
        url: str,
        *,
        margin: float,
        recovery: Recovery | None = None,
        prefix: str = "email-worker",
        timeout: float = 2.0,
    ) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._margin = margin
        self._recovery = recovery or Recovery()
        self._route_key = f"{prefix}:{{rates}}:route:"
        self._throttled_key = f"{prefix}:{{rates}}:throttled"
        self._reserve = self._script(RESERVE)
        self._throttle = self._script(THROTTLE)
        self._snapshot = self._script(SNAPSHOT)
        self._push = self._script(PUSH)

    def reserve(self, route: str, ceiling: float | None, count: int, horizon: float) -> Reservation:
        r = self._recovery
        start, spacing, granted, now, rate = self._call(
            self._reserve,
            [self._route_key + route],
            [
                "" if ceiling is None else ceiling,
                *(count, horizon, self._margin, r.growth, r.unlimited_after, DAY),
            ],
        )
        return Reservation(float(start), float(spacing), int(granted), float(now), _number(rate))

    def throttle(
        self, route: str, ceiling: float | None, observed: float, retry_after: float | None
    ) -> Throttle:
        r = self._recovery
        base, since, paused, now, halved = self._call(
            self._throttle,
            [self._route_key + route, self._throttled_key],
            [
                *(route, "" if ceiling is None else ceiling, observed, retry_after or 0),
                *(r.debounce, r.min_rate, r.first_floor, r.growth, r.unlimited_after),
                *(DAY, r.remembered),
            ],
        )
        state = RouteState(_number(base), _number(since), float(paused))
        return Throttle(state, float(now), halved == "1")

    def push(self, route: str, after: float, excess: float) -> None:
        self._call(self._push, [self._route_key + route], [after, excess, DAY])

    def snapshot(self) -> Snapshot:
        now, *rows = self._call(
            self._snapshot, [self._throttled_key], [self._route_key, self._recovery.remembered]
        )
        routes = {
            str(row[0]): RouteState(_number(row[1]), _number(row[2]), _number(row[3]) or 0.0)
            for row in rows
        }
        return Snapshot(float(now), routes)

    def close(self) -> None:
        self._client.close()

    def _script(self, source: str) -> Callable[..., Any]:
        script: Callable[..., Any] = self._client.register_script(source)
        return script

    @staticmethod
    def _call(script: Callable[..., Any], keys: list[str], args: Sequence[object]) -> Any:
        try:
            return script(keys=keys, args=list(args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DeferredFailure(
                Reason.DATABASE_UNAVAILABLE, f"redis: {type(exc).__name__}"
            ) from exc
