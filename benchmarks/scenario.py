"""One measured run of the real worker: a fresh database and queue names, ``workers`` processes
of ``email-worker run`` plus one ``email-worker callbacks``, N spec messages published (as fast
as possible or paced), and the figures of that run. Everything it creates it removes, also on
failure: processes are stopped, queues and the exchange deleted, the database dropped."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import broker, database, procstat, stats
from benchmarks.http_services import HttpServices
from benchmarks.processes import BenchmarkError, Processes, wait_until
from benchmarks.sinks import SinkProcess
from benchmarks.workloads import SIMPLE, Workload
from email_worker.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """Where everything runs: shared by every scenario of one benchmark."""

    amqp_url: str
    admin_database_url: str
    sink: SinkProcess
    services: HttpServices
    processes: Processes
    log_level: str = "INFO"


@dataclass(frozen=True)
class ProcessFigures:
    name: str
    cpu_seconds: float  # used during the measured window only
    peak_rss_bytes: int  # since the process started (VmHWM)
    # Same window, the worker's own processes only (0 where not measured, e.g. baselines):
    system_seconds: float = 0.0  # of cpu_seconds, in the kernel (stime)
    context_switches: int = 0  # voluntary + nonvoluntary, summed over the threads
    threads: int = 0  # at the end of the window


@dataclass
class RunResult:
    label: str
    workers: int
    messages: int
    sent: int = 0
    callbacks: int = 0
    sink_accepted: int = 0
    emails_per_s: float = 0.0
    callbacks_per_s: float = 0.0
    publish_per_s: float = 0.0
    paced_rate: float | None = None
    latency: stats.Latency | None = None
    processes: list[ProcessFigures] = field(default_factory=list)
    # CPU seconds of the other parts sharing the cores over the same window (component → s).
    machine_cpu: dict[str, float] = field(default_factory=dict)
    round_number: int = 1  # which of the ``--rounds`` repetitions of this configuration
    workload: str = "simple"  # benchmarks/workloads.py
    failed: int = 0  # requests that ended failed (by design in the realistic workload)

    def cpu_per_thousand(self, kind: str) -> float:
        """CPU seconds per 1,000 sent emails of the ``run`` or ``callbacks`` processes."""
        total = sum(p.cpu_seconds for p in self.processes if p.name.startswith(kind))
        return stats.per_thousand(total, self.sent)

    def peak_rss(self, kind: str) -> int:
        return max((p.peak_rss_bytes for p in self.processes if p.name.startswith(kind)), default=0)


def medians(runs: list[RunResult]) -> list[RunResult]:
    """Per number of worker processes, the run with the median emails/s (the lower middle of
    an even count), fewest processes first: the run that stands for its configuration when
    ``--rounds`` repeats it. With one round, every run."""
    by_workers: dict[int, list[RunResult]] = {}
    for run in runs:
        by_workers.setdefault(run.workers, []).append(run)
    chosen = []
    for workers in sorted(by_workers):
        ordered = sorted(by_workers[workers], key=lambda r: r.emails_per_s)
        chosen.append(ordered[(len(ordered) - 1) // 2])
    return chosen


def worker_settings(prefix: str, database_url: str, target: Target) -> dict[str, object]:
    """The run-specific settings: unique names, the fresh database, the local services. Tuning
    knobs (prefetch, concurrency, ...) come from the caller's ``EMAIL_WORKER_*`` environment."""
    return {
        "amqp_url": target.amqp_url,
        "database_url": database_url,
        "exchange": f"{prefix}.notifications.direct",
        "email_queue": f"{prefix}.email.queue",
        "failed_queue": f"{prefix}.failed.queue",
        "retry_queue_prefix": f"{prefix}.email.retry",
        "callback_queue": f"{prefix}.email.callbacks",
        "smtp_host": "127.0.0.1",
        "smtp_port": target.sink.port,
        "smtp_security": "none",
        "template_service_url": target.services.url,
        "callback_url": target.services.callback_url,
        "http_port": 0,
        "log_level": target.log_level,
        "message_id_secret": "benchmark-only-message-id-secret",
    }


def environment(values: dict[str, object]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.update({f"EMAIL_WORKER_{k.upper()}": str(v) for k, v in values.items()})
    return env


class Scenario:
    """Run once with ``run()``; the instance holds what ``cleanup()`` must remove."""

    def __init__(
        self,
        target: Target,
        label: str,
        workers: int,
        messages: int,
        workload: Workload = SIMPLE,
        settings: dict[str, object] | None = None,  # more worker settings (e.g. rate_limit)
    ) -> None:
        self.target, self.label, self.workers, self.messages = target, label, workers, messages
        self.workload = workload
        self.expected_failed = workload.failures(messages)
        tag = uuid.uuid4().hex[:10]
        self.prefix, self.db_name = f"bench-{tag}", f"bench_{tag}"
        self.db_url = database.with_database(target.admin_database_url, self.db_name)
        self.values = worker_settings(self.prefix, self.db_url, target) | workload.settings
        self.values |= settings or {}
        self.settings = Settings(**self.values)  # type: ignore[arg-type]
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, timeout: float, rate: float | None = None) -> RunResult:
        """Measure one run; raises ``BenchmarkError`` on a timeout or a dead process."""
        database.create(self.target.admin_database_url, self.db_name)
        try:
            database.migrate(environment(self.values))
            return self._measure(timeout, rate)
        finally:
            self.cleanup()

    def _start(self) -> list[tuple[str, int]]:
        env, procs = environment(self.values), self.target.processes
        argv = [sys.executable, "-m", "email_worker"]
        started = [
            ("callbacks", procs.start(f"{self.prefix}-callbacks", [*argv, "callbacks"], env))
        ]
        for n in range(self.workers):
            started.append(("run", procs.start(f"{self.prefix}-run{n}", [*argv, "run"], env)))
        self.children = started
        url, settings = self.target.amqp_url, self.settings

        def consuming() -> bool:
            procs.check_alive(*(child for _, child in started))
            email = broker.queue_counts(url, settings.email_queue)
            calls = broker.queue_counts(url, settings.callback_queue)
            return bool(email and calls and email[1] >= self.workers and calls[1] >= 1)

        wait_until(consuming, 90, f"{self.workers} worker(s) and the callbacks worker to consume")
        return [(name, child.pid) for name, child in started]

    def _measure(self, timeout: float, rate: float | None) -> RunResult:
        pids = self._start()
        services, sink = self.target.services, self.target.sink
        services.callbacks.clear()
        sink_before = sink.count()
        before = {pid: (procstat.sample(pid), procstat.activity(pid)) for _, pid in pids}
        shared_before = _shared_cpu(sink.pid)
        messages = (self.workload.message(f"{self.prefix}-{n}", n) for n in range(self.messages))
        publisher = broker.connect(self.target.amqp_url)  # open until all are consumed
        ledger = database.Ledger(self.db_url)
        try:
            published = broker.publish(
                publisher, self.settings.exchange, "email", broker.encoded(messages), rate=rate
            )
            first, last = min(published.values()), max(published.values())
            self._wait_done(ledger, timeout - (time.time() - first))
            after = {pid: (procstat.sample(pid), procstat.activity(pid)) for _, pid in pids}
            shared_after = _shared_cpu(sink.pid)
            sent_at = ledger.sent_at()
            failed = ledger.counts().get("failed", 0)
        finally:
            ledger.close()
            publisher.close()
        delivered = services.callbacks.delivered()
        result = RunResult(self.label, self.workers, self.messages, paced_rate=rate)
        result.workload, result.failed = self.workload.name, failed
        result.sent, result.callbacks = len(sent_at), len(delivered)
        result.sink_accepted = sink.settled_count(sink_before + result.sent) - sink_before
        result.emails_per_s = stats.rate(len(sent_at), first, max(sent_at.values(), default=0))
        result.callbacks_per_s = stats.rate(
            len(delivered), first, max(delivered.values(), default=0)
        )
        result.publish_per_s = stats.rate(len(published), first, last)
        result.latency = stats.summarize(stats.latencies(published, sent_at))
        result.processes = _figures(pids, before, after)
        result.machine_cpu = {
            name: round(shared_after[name] - shared_before.get(name, 0.0), 2)
            for name in shared_after
        }
        return result

    def _wait_done(self, ledger: database.Ledger, timeout: float) -> None:
        children = [child for _, child in self.children]
        callbacks = self.target.services.callbacks

        polls = itertools.count()

        expected_sent = self.messages - self.expected_failed

        def done() -> bool:
            self.target.processes.check_alive(*children)
            called_back = len(callbacks.delivered()) >= expected_sent
            # Counting the ledger scans a growing table: every 2 s (to stop early on a failed
            # row), and once every callback is in; measured 3 s of Postgres CPU per 12,000
            # emails when it ran at each poll, on the cores the worker is measured on.
            if not called_back and next(polls) % 10:
                return False
            counts = ledger.counts()
            if counts.get("failed", 0) > self.expected_failed:
                raise BenchmarkError(f"{counts['failed']} request(s) failed: see the worker logs")
            failed_as_planned = counts.get("failed", 0) == self.expected_failed
            return called_back and failed_as_planned and counts.get("sent", 0) >= expected_sent

        try:
            what = f"{expected_sent} emails sent and called back"
            wait_until(done, max(timeout, 5), what, 0.2)
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc} ({self._where_they_are(ledger)})") from None

    def _where_they_are(self, ledger: database.Ledger) -> str:
        """What a stalled run left where: ledger rows per status, which messages have none
        (the last ones published, or scattered), the queue and the callbacks."""
        queue = broker.queue_counts(self.target.amqp_url, self.settings.email_queue)
        ready, consumers = queue if queue else (None, None)
        recorded = set(ledger.sent_at())
        missing = [n for n in range(self.messages) if f"{self.prefix}-{n}" not in recorded]
        return (
            f"ledger {dict(sorted(ledger.counts().items()))}, not sent: {len(missing)} messages "
            f"numbered {missing[:5]}{' ...' if len(missing) > 5 else ''}, email queue ready "
            f"{ready} with {consumers} consumer(s), "
            f"callbacks {len(self.target.services.callbacks.delivered())}"
        )

    def cleanup(self) -> None:
        """Stop this run's processes, delete its queues and exchange, drop its database."""
        children = [child for _, child in self.children]
        if children:
            self.target.processes.stop(*children)
        s = self.settings
        queues = [s.email_queue, s.failed_queue, s.callback_queue]
        queues += [s.retry_queue_name(delay) for delay in s.retry_delays]
        queues += [s.lane_queue] if s.lane_queue else []
        try:
            broker.delete(self.target.amqp_url, queues, [s.exchange])
        finally:
            database.drop(self.target.admin_database_url, self.db_name)


# Command names of the shared services on this machine, as the report names them.
_SERVICES = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}


def _shared_cpu(sink_pid: int) -> dict[str, float]:
    """CPU seconds so far of PostgreSQL and RabbitMQ (every process of theirs), the SMTP sink,
    and this harness (publisher, template service and callback receiver)."""
    totals = dict.fromkeys([*_SERVICES.values(), "SMTP sink", "harness"], 0.0)
    for name, seconds in procstat.cpu_of_commands(frozenset(_SERVICES)).values():
        totals[_SERVICES[name]] += seconds
    for label, pid in (("SMTP sink", sink_pid), ("harness", os.getpid())):
        reading = procstat.sample(pid)
        totals[label] = reading.cpu_seconds if reading else 0.0
    return totals


_Reading = tuple[procstat.Sample | None, procstat.Activity | None]


def _figures(
    pids: list[tuple[str, int]], before: dict[int, _Reading], after: dict[int, _Reading]
) -> list[ProcessFigures]:
    figures = []
    for index, (name, pid) in enumerate(pids):
        (start, k_start), (end, k_end) = before[pid], after[pid]
        if start is None or end is None or k_start is None or k_end is None:
            raise BenchmarkError(f"process {name} ({pid}) vanished before it was measured")
        label = name if name == "callbacks" else f"run{index - 1}"
        cpu = end.cpu_seconds - start.cpu_seconds
        system = k_end.system_seconds - k_start.system_seconds
        switches = procstat.switches_between(k_start.switches, k_end.switches)
        figures.append(
            ProcessFigures(label, cpu, end.peak_rss_bytes, system, switches, k_end.threads)
        )
    return figures
