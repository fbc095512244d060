"""``PgRateStore``: the rate limiter's shared store in Postgres (``005_rate_routes.sql``).

One statement per call, each its own short transaction: ``ew_reserve_slots`` reserves a batch
of slots under the route's row lock, ``ew_push_slots`` moves the next free slot after a late
send, ``ew_throttle_route`` halves and pauses, and the snapshot reads the routes throttled
lately. Every time comes from the database clock, read after the
row lock is held, so neither replica clocks nor lock waits skew the slots. The store owns its
own small pool (``build.pacer``), so that a reservation never waits behind the ledger's group
commits. Raises ``DeferredFailure(DATABASE_UNAVAILABLE)`` when Postgres cannot be reached.
"""

from __future__ import annotations

from email_worker.ledger.db import Database
from email_worker.pacing.adaptive import Recovery, RouteState
from email_worker.pacing.store import Reservation, Snapshot, Throttle

_RESERVE = "SELECT * FROM ew_reserve_slots(%s, %s, %s, %s, %s, %s, %s)"
_THROTTLE = "SELECT * FROM ew_throttle_route(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
# One row at least (the clock), then one per route throttled within the memory or paused now.
_SNAPSHOT = """
SELECT n.now, r.route, r.base_rate, r.throttled_at, r.paused_until
FROM (SELECT extract(epoch FROM clock_timestamp())::double precision AS now) n
LEFT JOIN rate_routes r ON r.throttled_at > n.now - %s OR r.paused_until > n.now
"""


class PgRateStore:
    """A ``RateStore`` over ``db`` (closed by ``close``)."""

    def __init__(self, db: Database, *, margin: float, recovery: Recovery | None = None) -> None:
        self._db = db
        self._margin = margin
        self._recovery = recovery or Recovery()

    def reserve(self, route: str, ceiling: float | None, count: int, horizon: float) -> Reservation:
        recovery = self._recovery
        args = (route, ceiling, count, horizon, self._margin, recovery.growth)
        with self._db.autocommit() as cur:
            cur.execute(_RESERVE, (*args, recovery.unlimited_after))
            start, spacing, granted, now, rate = cur.fetchone() or (0.0, 0.0, 0, 0.0, None)
        return Reservation(start, spacing, granted, now, rate)

    def throttle(
        self, route: str, ceiling: float | None, observed: float, retry_after: float | None
    ) -> Throttle:
        r = self._recovery
        with self._db.autocommit() as cur:
            cur.execute(
                _THROTTLE,
                (
                    *(route, ceiling, observed, retry_after),
                    *(r.debounce, r.min_rate, r.first_floor, r.growth, r.unlimited_after),
                ),
            )
            base, since, paused, now, halved = cur.fetchone() or (None, None, 0.0, 0.0, False)
        return Throttle(RouteState(base, since, paused), now, halved)

    def push(self, route: str, after: float, excess: float) -> None:
        with self._db.autocommit() as cur:
            cur.execute("SELECT ew_push_slots(%s, %s, %s)", (route, after, excess))

    def snapshot(self) -> Snapshot:
        with self._db.autocommit() as cur:
            cur.execute(_SNAPSHOT, (self._recovery.remembered,))
            rows = cur.fetchall()
        now = rows[0][0] if rows else 0.0
        routes = {
            route: RouteState(base, since, paused)
            for _, route, base, since, paused in rows
            if route is not None
        }
        return Snapshot(now, routes)

    def close(self) -> None:
        self._db.close()
