"""The worker's processes as production runs them, for fault tests: ``email-worker run``
replicas, one ``email-worker callbacks`` (Celery) worker and one ``email-worker beat``, each a
subprocess with a stack's settings, each logging to a file of its own.

``Replicas`` starts them, kills one with SIGKILL (``kill -9``: no drain, no clean-up) and starts
it again under the same name, and stops them all at the end (SIGTERM, then SIGKILL for any that
will not go). Only processes it started are ever signalled, by their own id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

import pika
import pika.exceptions

from tests.support.stack import wait_for

STOP_SECONDS = 15.0


class Replicas:
    """``run_count`` ``run`` processes (``run-1``...), ``callbacks`` and ``beat``."""

    def __init__(
        self,
        environment: Mapping[str, str],
        amqp_url: str,
        logs: Path,
        *,
        run_count: int = 2,
    ) -> None:
        self._env = {**os.environ, **environment}
        self._amqp_url = amqp_url
        self._logs = logs
        self.names = [f"run-{n}" for n in range(1, run_count + 1)] + ["callbacks", "beat"]
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0

    def start(self, name: str | None = None) -> None:
        """Start ``name`` (every process when None)."""
        for each in [name] if name else self.names:
            command = "run" if each.startswith("run-") else each
            with (self._logs / f"{each}.log").open("ab") as log:
                self._processes[each] = subprocess.Popen(
                    [sys.executable, "-m", "email_worker", command],
                    env=self._env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and reap it."""
        process = self._processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.kills += 1

    def alive(self) -> list[str]:
        return [name for name, p in self._processes.items() if p.poll() is None]

    def stop(self) -> None:
        """SIGTERM each (``run`` drains), then SIGKILL whatever is left."""
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def consumers(self, queue: str) -> int:
        """The consumers of ``queue`` on the broker (0 while it cannot say)."""
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self._amqp_url))
        except pika.exceptions.AMQPError:
            return 0
        try:
            return int(
                connection.channel().queue_declare(queue, passive=True).method.consumer_count
            )
        except pika.exceptions.AMQPError:
            return 0
        finally:
            with suppress(pika.exceptions.AMQPError):
                if connection.is_open:
                    connection.close()

    def wait_consuming(self, email_queue: str, callback_queue: str, timeout: float) -> None:
        """Until every ``run`` consumes ``email_queue`` and ``callbacks`` its queue."""
        runs = sum(name.startswith("run-") for name in self.names)
        wait_for(lambda: self.consumers(email_queue) == runs, timeout, "the run replicas")
        wait_for(lambda: self.consumers(callback_queue) >= 1, timeout, "the callbacks worker")

    def tail(self, name: str, size: int = 3000) -> str:
        """The end of ``name``'s log, for failure messages."""
        with suppress(OSError):
            return (self._logs / f"{name}.log").read_text(errors="replace")[-size:]
        return ""
