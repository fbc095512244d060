"""Runs the baselines (``baselines/``) on the same broker, database server, sink and HTTP
services as the worker, with the same figures as a worker run:

- ``naive``: ``baselines/naive_celery.py``, a real ``celery worker`` (threads pool, concurrency
  8) fed N tasks published through Celery;
- ``tuned``: ``baselines/tuned_celery.py``, the same way (threads pool, concurrency 16);
- ``asyncio``: ``baselines/asyncio_consumer.py``, one process consuming the spec's JSON
  messages published to its queue exactly as the worker's are.

A baseline's accept time is its own ``naive_emails.sent_at`` (committed right after the send)."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg2

from benchmarks import broker, database, procstat, stats
from benchmarks.baselines import naive_celery, tuned_celery
from benchmarks.baselines.tuned_celery import TABLE_DDL  # sent_at NULL until sent: fits all
from benchmarks.processes import wait_until
from benchmarks.scenario import REPO_ROOT, ProcessFigures, RunResult, Target


@dataclass(frozen=True)
class Baseline:
    kind: str  # naive | tuned | asyncio
    label: str
    module: str
    concurrency: int = 0  # Celery threads; 0 for the asyncio consumer


BASELINES = {
    "naive": Baseline("naive", "naive Celery baseline", "benchmarks.baselines.naive_celery", 8),
    "tuned": Baseline("tuned", "tuned Celery baseline", "benchmarks.baselines.tuned_celery", 16),
    "asyncio": Baseline(
        "asyncio", "asyncio consumer baseline", "benchmarks.baselines.asyncio_consumer"
    ),
}


def _prepare(db_url: str) -> None:
    connection = psycopg2.connect(db_url, connect_timeout=10)
    try:
        with connection, connection.cursor() as cur:
            cur.execute(TABLE_DDL)
    finally:
        connection.close()


def _argv(baseline: Baseline, queue: str) -> list[str]:
    if not baseline.concurrency:
        return [sys.executable, "-m", baseline.module]
    argv = [sys.executable, "-m", "celery", "-A", baseline.module]
    argv += ["worker", "--pool=threads", f"--concurrency={baseline.concurrency}"]
    argv += [f"--queues={queue}", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return [*argv, "-l", "WARNING"]


def run_naive(target: Target, messages: int, timeout: float) -> RunResult:
    """The naive baseline once (kept for callers of the first benchmark)."""
    return run_baseline(target, BASELINES["naive"], messages, timeout)


def run_baseline(target: Target, baseline: Baseline, messages: int, timeout: float) -> RunResult:
    """Measure ``baseline`` once; everything it created is removed before it returns."""
    tag = uuid.uuid4().hex[:10]
    queue, db_name = f"bench-{tag}.{baseline.kind}", f"bench_{tag}"
    db_url = database.create(target.admin_database_url, db_name)
    child = None
    try:
        _prepare(db_url)
        if not baseline.concurrency:  # the asyncio consumer expects its queue to exist
            broker.declare_classic(target.amqp_url, queue)
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
        child = target.processes.start(f"bench-{tag}-{baseline.kind}", _argv(baseline, queue), env)

        def consuming() -> bool:
            target.processes.check_alive(child)
            counts = broker.queue_counts(target.amqp_url, queue)
            return bool(counts and counts[1] >= 1)

        wait_until(consuming, 90, f"the {baseline.label} to consume")
        return _measure(target, baseline, messages, timeout, queue, db_url, child.pid)
    finally:
        if child is not None:
            target.processes.stop(child)
        broker.delete(target.amqp_url, [queue])
        database.drop(target.admin_database_url, db_name)


def _publish(target: Target, baseline: Baseline, queue: str, messages: int) -> dict[str, float]:
    """Publish the spec's messages the way the baseline takes them; each one's publish time."""
    prefix = f"{baseline.kind}-{uuid.uuid4().hex[:6]}"
    bodies = [broker.spec_message(f"{prefix}-{n}", n) for n in range(messages)]
    if not baseline.concurrency:
        connection = broker.connect(target.amqp_url)
        try:
            pairs = ((m["request_id"], json.dumps(m).encode()) for m in bodies)
            return broker.publish(connection, "", queue, pairs)
        finally:
            connection.close()
    module = naive_celery if baseline.kind == "naive" else tuned_celery
    app = module.make_app(target.amqp_url, queue)
    published: dict[str, float] = {}
    with app.producer_or_acquire() as producer:
        for message in bodies:
            published[message["request_id"]] = time.time()
            app.send_task(module.TASK, args=[message], queue=queue, producer=producer)
    return published


def _measure(
    target: Target,
    baseline: Baseline,
    messages: int,
    timeout: float,
    queue: str,
    db_url: str,
    pid: int,
) -> RunResult:
    target.services.callbacks.clear()
    sink_before = target.sink.count()
    before = procstat.sample(pid)
    published = _publish(target, baseline, queue, messages)
    first = min(published.values())
    ledger = database.Ledger(db_url)
    try:
        done = "SELECT count(*) FROM naive_emails WHERE sent_at IS NOT NULL"
        wait_until(
            lambda: (
                ledger.scalar(done) >= messages
                and len(target.services.callbacks.delivered()) >= messages
            ),
            max(5.0, timeout - (time.time() - first)),
            f"{messages} {baseline.kind} emails sent and called back",
            0.2,
        )
        after = procstat.sample(pid)
        sent_at = _sent_at(ledger)
    finally:
        ledger.close()
    delivered = target.services.callbacks.delivered()
    result = RunResult(baseline.label, 1, messages)
    result.sent, result.callbacks = len(sent_at), len(delivered)
    result.sink_accepted = target.sink.settled_count(sink_before + result.sent) - sink_before
    result.emails_per_s = stats.rate(len(sent_at), first, max(sent_at.values()))
    result.callbacks_per_s = stats.rate(len(delivered), first, max(delivered.values()))
    result.publish_per_s = stats.rate(len(published), first, max(published.values()))
    result.latency = stats.summarize(stats.latencies(published, sent_at))
    if before is not None and after is not None:
        cpu = after.cpu_seconds - before.cpu_seconds
        result.processes = [ProcessFigures("run", cpu, after.peak_rss_bytes)]
    return result


def _sent_at(ledger: database.Ledger) -> dict[str, float]:
    return ledger.epochs(
        "SELECT request_id, extract(epoch FROM sent_at)::float8 FROM naive_emails"
        " WHERE sent_at IS NOT NULL"
    )
