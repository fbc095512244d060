"""What the suppression check costs each message: ``python -m benchmarks.suppression_check``.

Against the real Postgres of ``EMAIL_WORKER_DATABASE_URL`` (default: loopback), in a scratch
database made and dropped here: one primary-key probe in autocommit through the worker's
pool (``SuppressionStore.reason``) and the pipeline's port (``PgSuppressions.check``, whose
concurrent checks share one statement) on a list of ``--entries`` addresses, for a listed and
an unlisted address, beside a bare ``SELECT 1`` through the same pool (the floor any database
call pays). Reports wall time and this process's CPU per call, median of
``--rounds``, from one thread and from ``--threads`` threads sharing a pool of 10 as ``run``
does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg2

from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from email_worker.ledger.suppressions import PgSuppressions, SuppressionStore
from email_worker.suppression.entries import address_key

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _fill(db: Database, entries: int) -> None:
    rows = [(address_key(f"user{n}@example.com"), f"user{n}@example.com") for n in range(entries)]
    with db.transaction() as cur:
        for start in range(0, len(rows), 5000):
            args = ",".join(
                cur.mogrify("(%s, %s, 'hard_bounce', 'smtp')", row).decode()
                for row in rows[start : start + 5000]
            )
            cur.execute(
                f"INSERT INTO suppressions (address_hash, address, reason, source) VALUES {args}"
            )


def _measure(call: Callable[[], object], calls: int, threads: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        for _ in range(calls):
            call()
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: call(), range(calls)))
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    admin = os.environ.get("EMAIL_WORKER_DATABASE_URL", DEFAULT_URL)
    name = f"ew_bench_{uuid.uuid4().hex[:8]}"
    _admin(admin, f"CREATE DATABASE {name}")
    db = Database(f"{admin.rpartition('/')[0]}/{name}", pool_size=10)
    try:
        migrate(db)
        _fill(db, args.entries)
        port = PgSuppressions(SuppressionStore(db))

        def floor() -> None:
            with db.autocommit() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()

        store = SuppressionStore(db)
        cases = {
            "SELECT 1 (floor)": floor,
            "one probe, listed": lambda: store.reason("User77@Example.com"),
            "one probe, unlisted": lambda: store.reason("someone.else@example.com"),
            "port (shared), listed": lambda: port.check("User77@Example.com"),
            "port (shared), unlisted": lambda: port.check("someone.else@example.com"),
        }
        print(f"{args.entries} entries, {args.calls} calls a round, median of {args.rounds}")
        for threads in (1, args.threads):
            for label, call in cases.items():
                results = [_measure(call, args.calls, threads) for _ in range(args.rounds)]
                wall = statistics.median(r[0] for r in results)
                cpu = statistics.median(r[1] for r in results)
                print(f"{threads:>2} thread(s)  {label:<24} wall {wall:7.1f} µs  CPU {cpu:6.1f} µs")
    finally:
        db.close()
        _admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
