"""What the rate limiter costs a send (``email_worker/pacing``): ``wait_turn`` then
``report`` of one accepted send, as the pipeline calls them, on one thread.

- no limit set: the ``RoutePacer`` the worker builds when ``RATE_LIMIT`` and
  ``DOMAIN_RATE_LIMITS`` are unset (and nothing throttled) against ``NoPacer``;
- ``RATE_LIMIT`` far above the rate (10 million a second, so no call ever waits and slots are
  always due) with the in-process store (``MemoryRateStore``: the limiter's own work, batches
  of 200 slots) and, when Postgres answers, with the real store (``PgRateStore`` on a fresh
  database: one ``ew_reserve_slots`` per batch; the backend's CPU is added).

Equivalence: every call returns without raising and the store was asked the expected number of
times (none without a limit).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable

import psycopg2
from psycopg2 import sql

from benchmarks import procstat
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from email_worker.ledger.rate_routes import PgRateStore
from email_worker.pacing import PacerConfig, RoutePacer
from email_worker.pacing.memory import MemoryRateStore
from email_worker.pacing.store import RateStore
from email_worker.ports import NoPacer, Pacer

PART = "pacing"
FAR_ABOVE = 10_000_000.0  # emails a second: no call of the loop ever waits for its slot
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _send(pacer: Pacer) -> Callable[[], None]:
    def op() -> None:
        pacer.wait_turn("example.com", 0)
        pacer.report("example.com", None)

    return op


def _pacer(store: RateStore, rate: float | None) -> RoutePacer:
    return RoutePacer(PacerConfig(relay_rate=rate, domain_rates={}), store)


def _backend_cpu(pid: int) -> Callable[[], float]:
    def read() -> float:
        found = procstat.sample(pid)
        return found.cpu_seconds if found else 0.0

    return read


def _compare(case: str, ours: Side, calls: int, rounds: int) -> Comparison:
    mine, theirs = measure_pair(ours, Side("NoPacer", _send(NoPacer())), calls=calls, rounds=rounds)
    return Comparison(PART, case, mine, theirs, "every call returned; the store asked as expected")


def run(rounds: int, scale: float = 1.0, admin_url: str = ADMIN_URL) -> list[Comparison]:
    calls = max(1, int(20_000 * scale))
    unset_store = MemoryRateStore(margin=0.05)
    found = [
        _compare(
            "no limit set", Side("RoutePacer", _send(_pacer(unset_store, None))), calls, rounds
        )
    ]
    assert unset_store.calls == 0, "a pacer with nothing limited asked the store"
    memory = MemoryRateStore(margin=0.05)
    side = Side("RoutePacer, in-process store", _send(_pacer(memory, FAR_ABOVE)))
    found.append(_compare("RATE_LIMIT far above the rate", side, calls, rounds))
    sends = calls * rounds + 1  # and the warm-up
    assert 0 < memory.calls < sends / 4, memory.calls  # batches, not a round trip per send
    found += _postgres(calls, rounds, admin_url)
    return found


def _postgres(calls: int, rounds: int, admin_url: str) -> list[Comparison]:
    name = f"bench_pacing_{uuid.uuid4().hex[:8]}"
    try:
        _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        print(f"pacing: Postgres not reachable ({type(exc).__name__}); skipped", file=sys.stderr)
        return []
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    db = Database(url, pool_size=1)
    try:
        migrate(db)
        with db.autocommit() as cur:
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
        pacer = _pacer(PgRateStore(db, margin=0.05), FAR_ABOVE)
        pid = int(row[0]) if row else 0
        side = Side("RoutePacer, Postgres store", _send(pacer), other_cpu=_backend_cpu(pid))
        return [_compare("RATE_LIMIT far above the rate, Postgres", side, calls, rounds)]
    finally:
        db.close()
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        _admin(admin_url, drop)


def _admin(url: str, statement: sql.Composed) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
