"""Postgres access: a thread-safe connection pool, one transaction context manager, and the one
place where psycopg2 errors are translated into ``schemas.failures`` errors.

Hazards handled here: psycopg2's ``ThreadedConnectionPool`` raises instead of waiting when it is
exhausted (a semaphore makes callers wait); a connection broken by a Postgres restart looks
healthy until it is used. An idle pooled connection has nothing to read, so a socket that is
readable at checkout (the server's goodbye, or EOF) marks it suspect: it is probed with a
round trip and closed if dead. A healthy checkout costs no round trip; a broken connection is
closed instead of returned to the pool.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg2
from psycopg2.extensions import connection, cursor
from psycopg2.pool import ThreadedConnectionPool
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from schemas.failures import DeferredFailure, Reason

log = logging.getLogger(__name__)

# Errors meaning "the database is not usable right now". OperationalError also covers
# serialization failures, deadlocks, lock and statement timeouts: all retryable later.
UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)


# The cursor type, for code that runs statements without importing the driver itself.
Cursor = cursor


class Database:
    """A pool of at most ``pool_size`` connections, safe to share between threads."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int,
        connect_timeout: float = 5.0,
        checkout_timeout: float = 30.0,
    ) -> None:
        # minconn=0 so that constructing the pool never connects (start-up does not crash
        # while Postgres is briefly down); then raise minconn, because psycopg2 closes
        # every returned connection beyond minconn instead of keeping it idle.
        self._pool = ThreadedConnectionPool(
            0,
            pool_size,
            dsn,
            connect_timeout=max(1, int(connect_timeout)),
            options="-c timezone=UTC",  # every session in UTC, whatever the server default
        )
        self._pool.minconn = pool_size
        self._size = pool_size
        self._slots = threading.BoundedSemaphore(pool_size)
        self._checkout_timeout = checkout_timeout

    def transaction(self) -> AbstractContextManager[cursor]:
        """Yield a cursor inside one transaction: commit on success, roll back on any error.

        Raises ``DeferredFailure(DATABASE_UNAVAILABLE)`` when no connection can be had or the
        database fails mid-transaction; other exceptions from the body pass through unchanged.
        A broken connection is discarded, never returned to the pool.
        """
        return self._session(autocommit=False)

    def autocommit(self) -> AbstractContextManager[cursor]:
        """Like ``transaction`` but each statement commits on its own: for work that is one
        statement (a CTE may write several tables atomically), without the round trips of
        BEGIN and COMMIT. Several statements here are *not* atomic together."""
        return self._session(autocommit=True)

    @contextmanager
    def _session(self, *, autocommit: bool) -> Iterator[cursor]:
        if not self._slots.acquire(timeout=self._checkout_timeout):
            raise DeferredFailure(Reason.DATABASE_UNAVAILABLE, "connection pool exhausted")
        conn: connection | None = None
        try:
            conn = self._checkout_fast()
            conn.autocommit = autocommit  # client-side only outside a transaction
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except UNAVAILABLE as exc:
            raise DeferredFailure(Reason.DATABASE_UNAVAILABLE, type(exc).__name__) from exc
        finally:
            if conn is not None:
                self._checkin(conn)
            self._slots.release()

    def ping(self) -> bool:
        """True when a trivial query succeeds now (readiness); never raises."""
        try:
            with self.transaction() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except DeferredFailure:
            return False

    def close(self) -> None:
        """Close every pooled connection. The object must not be used afterwards."""
        self._pool.closeall()

    def _checkout_fast(self) -> connection:
        # The retry wrapper costs more than a checkout: enter it only after a failure.
        try:
            conn = self._pool.getconn()
        except UNAVAILABLE:
            return self._checkout()
        if self._usable(conn):
            return conn
        return self._checkout()

    @retry(
        retry=retry_if_exception_type(UNAVAILABLE),
        stop=stop_after_attempt(3) | stop_after_delay(2),
        wait=wait_random_exponential(multiplier=0.1, max=0.8),
        reraise=True,
    )
    def _checkout(self) -> connection:
        # A short jittered retry around getting a usable connection only. After a Postgres
        # restart every idle pooled connection is dead but looks fine until used: probe each
        # one and drop the dead ones at once, without sleeping between them.
        for _ in range(self._size + 1):
            conn = self._pool.getconn()  # connect errors go to the retry above
            if self._usable(conn):
                return conn
        raise psycopg2.OperationalError("no usable pooled connection")

    def _usable(self, conn: connection) -> bool:
        if conn.closed:
            self._pool.putconn(conn, close=True)
            return False
        try:
            suspect = bool(select.select([conn.fileno()], [], [], 0)[0])
        except (OSError, ValueError):  # ValueError: a descriptor past select's limit
            suspect = True
        if not suspect:
            return True
        try:
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            # Outside autocommit the probe opened a transaction: end it, or the session's
            # autocommit switch would be refused on a live connection.
            conn.rollback()
        except UNAVAILABLE:
            self._pool.putconn(conn, close=True)
            return False
        return True

    def _checkin(self, conn: connection) -> None:
        broken = bool(conn.closed)
        if not broken:
            try:
                # A no-op after commit or in autocommit; ends a failed transaction otherwise.
                # The autocommit mode is left as it is: every checkout sets its own.
                conn.rollback()
            except UNAVAILABLE:
                broken = True
        if broken:
            log.warning("discarding a broken database connection")
        self._pool.putconn(conn, close=broken)
