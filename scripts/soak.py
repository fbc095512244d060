"""Soak: steady load on two worker processes for ``--minutes`` while one worker is killed with
SIGKILL (and restarted) every minute and the broker is restarted once half-way; then the ledger
check, and each worker's RSS and open file descriptors over time. Loopback services only (the
local RabbitMQ and Postgres, an aiosmtpd relay and an HTTP template service in this process);
every loop is bounded by the clock. Not part of the test suite:

    .venv/bin/python scripts/soak.py --minutes 3 [--rate 40] [--json report.json]

Exit status 0 when the ledger check passes (lost = 0, unexpected = 0), else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from email_worker.app import declare_topology
from email_worker.config import Settings
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from tests.support.http import FakeHttpServer
from tests.support.ledger_check import LedgerCheck, copies_from, wait_settled
from tests.support.services import admin_statement
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack

ADMIN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_FLIGHT = ("concurrency", "prefetch", "smtp_connections")
# Short leases and delays so a kill's consequences play out within the soak; the work in flight
# is the shipped default (the test stack's own is smaller).
WORKER = {
    "lease_seconds": 5,
    "retry_delays": [1.0, 2.0, 4.0],
    "max_attempts": 6,
    **{name: Settings.model_fields[name].default for name in IN_FLIGHT},
}


class Workers:
    """Two ``email-worker run`` processes; ``kill(i)`` SIGKILLs one and starts a new one."""

    def __init__(self, stack: Stack, logs: Path) -> None:
        self._env = {**os.environ, **stack.environment(**WORKER)}
        self._logs = logs
        self.processes: list[subprocess.Popen[bytes]] = [self._start(i) for i in range(2)]
        self.kills = 0

    def _start(self, index: int) -> subprocess.Popen[bytes]:
        with (self._logs / f"worker{index}.log").open("ab") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "email_worker", "run"],
                env=self._env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def kill(self, index: int) -> None:
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait(10)
        self.processes[index] = self._start(index)
        self.kills += 1

    def stop(self) -> list[int | None]:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(None)
        return codes


def sample(workers: Workers, started: float) -> dict[str, Any]:
    """RSS (MiB) and open descriptors of each live worker process."""
    row: dict[str, Any] = {"t_s": round(time.monotonic() - started)}
    for index, process in enumerate(workers.processes):
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
            fds = len(os.listdir(f"/proc/{process.pid}/fd"))
        except (OSError, StopIteration):
            rss_kb, fds = 0, 0
        row[f"w{index}_rss_mib"] = round(rss_kb / 1024, 1)
        row[f"w{index}_fds"] = fds
    return row


def publish_load(check: LedgerCheck, rate: int, until: float, stop: threading.Event) -> None:
    """``rate`` requests a second in 0.25 s batches; a broker outage delays, never drops."""
    while time.monotonic() < until and not stop.is_set():
        for _ in range(max(1, rate // 4)):
            check.add(f"soak-{uuid.uuid4().hex[:12]}")
        # Unpublished requests stay queued in the checker for the next round.
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            check.publish()
        time.sleep(0.25)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            check.publish()
            return
        except (pika.exceptions.AMQPError, OSError):
            time.sleep(1)


def restart_broker() -> float:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    started = time.monotonic()
    # A fixed argv of a local tool, no outside input.
    subprocess.run([ctl, "stop_app"], check=True, capture_output=True, timeout=120)  # noqa: S603
    time.sleep(2)
    subprocess.run([ctl, "start_app"], check=True, capture_output=True, timeout=120)  # noqa: S603
    subprocess.run([ctl, "await_startup"], check=False, capture_output=True, timeout=120)  # noqa: S603
    return round(time.monotonic() - started, 1)


def run(minutes: float, rate: int, logs: Path) -> dict[str, Any]:
    database = f"ew_soak_{uuid.uuid4().hex[:8]}"
    admin_statement(ADMIN, f'CREATE DATABASE "{database}"')
    url = f"{ADMIN.rpartition('/')[0]}/{database}"
    db = Database(url, pool_size=1)
    migrate(db)
    db.close()
    smtp, http = SmtpTestServer().start(), FakeHttpServer().start()
    stack = Stack(url, AMQP, f"soak{uuid.uuid4().hex[:6]}", smtp, http)
    declare_topology(stack.settings())
    check = stack.ledger_check()
    try:
        return _drive(stack, check, minutes, rate, logs)
    finally:
        stack.cleanup()
        smtp.stop()
        http.stop()
        admin_statement(ADMIN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _drive(
    stack: Stack, check: LedgerCheck, minutes: float, rate: int, logs: Path
) -> dict[str, Any]:
    workers = Workers(stack, logs)
    started = time.monotonic()
    until = started + minutes * 60
    stop = threading.Event()
    load = threading.Thread(target=publish_load, args=(check, rate, until, stop), daemon=True)
    load.start()
    samples, broker_restart_s, next_kill, next_sample = [], None, started + 60, started
    broker_at = started + minutes * 30
    while time.monotonic() < until:
        now = time.monotonic()
        if now >= next_sample:
            samples.append(sample(workers, started))
            next_sample += 10
        if now >= next_kill:
            workers.kill(workers.kills % 2)
            next_kill += 60
        if broker_restart_s is None and now >= broker_at:
            broker_restart_s = restart_broker()
        time.sleep(0.5)
    load.join(90)
    settled = wait_settled(check, lambda: stack.queued() == 0, 180)
    samples.append(sample(workers, started))
    exit_codes = workers.stop()
    report = check.check(copies_from(stack.smtp.messages))
    elapsed = time.monotonic() - started
    return {
        "minutes": minutes,
        "published": len(check.requests),
        "settled": settled,
        "elapsed_s": round(elapsed, 1),
        "kills": workers.kills,
        "broker_restart_s": broker_restart_s,
        "exit_codes_after_sigterm": exit_codes,
        "counts": dict(report.counts),
        "ok": report.ok,
        "problems": report.summary().splitlines()[1:21],
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=40, help="requests per second")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = run(args.minutes, args.rate, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
