"""Runs the naive baseline (``baselines/naive_celery.py``) on the same broker, database server,
sink and HTTP services as the worker: a real ``celery worker`` subprocess (threads pool,
concurrency 8), N tasks published through Celery, and the same figures as a worker run. The
baseline's accept time is its own ``naive_emails.sent_at`` (committed right after the send)."""

from __future__ import annotations

import os
import sys
import time
import uuid

import psycopg2

from benchmarks import broker, database, procstat, stats
from benchmarks.baselines.naive_celery import TABLE_DDL, TASK, make_app
from benchmarks.processes import wait_until
from benchmarks.scenario import REPO_ROOT, ProcessFigures, RunResult, Target

CONCURRENCY = 8


def _prepare(db_url: str) -> None:
    connection = psycopg2.connect(db_url, connect_timeout=10)
    try:
        with connection, connection.cursor() as cur:
            cur.execute(TABLE_DDL)
    finally:
        connection.close()


def run_naive(target: Target, messages: int, timeout: float) -> RunResult:
    """Measure the baseline once; everything it created is removed before it returns."""
    tag = uuid.uuid4().hex[:10]
    queue, db_name = f"bench-{tag}.naive", f"bench_{tag}"
    db_url = database.create(target.admin_database_url, db_name)
    child = None
    try:
        _prepare(db_url)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "BENCH_NAIVE_BROKER_URL": target.amqp_url,
            "BENCH_NAIVE_QUEUE": queue,
            "BENCH_NAIVE_DATABASE_URL": db_url,
            "BENCH_NAIVE_TEMPLATE_URL": target.services.url,
            "BENCH_NAIVE_CALLBACK_URL": target.services.callback_url,
            "BENCH_NAIVE_SMTP_PORT": str(target.sink.port),
        }
        argv = [sys.executable, "-m", "celery", "-A", "benchmarks.baselines.naive_celery"]
        argv += ["worker", "--pool=threads", f"--concurrency={CONCURRENCY}", f"--queues={queue}"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
        child = target.processes.start(f"bench-{tag}-naive", argv, env)

        def consuming() -> bool:
            target.processes.check_alive(child)
            counts = broker.queue_counts(target.amqp_url, queue)
            return bool(counts and counts[1] >= 1)

        wait_until(consuming, 90, "the naive Celery worker to consume")
        return _measure(target, messages, timeout, queue, db_url, child.pid)
    finally:
        if child is not None:
            target.processes.stop(child)
        broker.delete(target.amqp_url, [queue])
        database.drop(target.admin_database_url, db_name)


def _measure(
    target: Target, messages: int, timeout: float, queue: str, db_url: str, pid: int
) -> RunResult:
    target.services.callbacks.clear()
    sink_before = target.sink.count()
    before = procstat.sample(pid)
    app = make_app(target.amqp_url, queue)
    published: dict[str, float] = {}
    with app.producer_or_acquire() as producer:
        for n in range(messages):
            message = broker.spec_message(f"naive-{n}-{uuid.uuid4().hex[:6]}", n)
            published[message["request_id"]] = time.time()
            app.send_task(TASK, args=[message], queue=queue, producer=producer)
    first = min(published.values())
    ledger = database.Ledger(db_url)
    try:
        done = "SELECT count(*) FROM naive_emails"
        wait_until(
            lambda: (
                ledger.scalar(done) >= messages
                and len(target.services.callbacks.delivered()) >= messages
            ),
            max(5.0, timeout - (time.time() - first)),
            f"{messages} naive emails sent and called back",
            0.2,
        )
        after = procstat.sample(pid)
        sent_at = _sent_at(ledger)
    finally:
        ledger.close()
    delivered = target.services.callbacks.delivered()
    result = RunResult("naive Celery baseline", 1, messages)
    result.sent, result.callbacks = len(sent_at), len(delivered)
    result.sink_accepted = target.sink.settled_count(sink_before + result.sent) - sink_before
    result.emails_per_s = stats.rate(len(sent_at), first, max(sent_at.values()))
    result.callbacks_per_s = stats.rate(len(delivered), first, max(delivered.values()))
    result.publish_per_s = stats.rate(len(published), first, max(published.values()))
    result.latency = stats.summarize(stats.latencies(published, sent_at))
    if before is not None and after is not None:
        cpu = after.cpu_seconds - before.cpu_seconds
        result.processes = [ProcessFigures("run-naive", cpu, after.peak_rss_bytes)]
    return result


def _sent_at(ledger: database.Ledger) -> dict[str, float]:
    return ledger.epochs("SELECT request_id, extract(epoch FROM sent_at)::float8 FROM naive_emails")
