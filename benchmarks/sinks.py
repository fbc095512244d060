"""The SMTP sink the worker sends to: Postfix's C ``smtp-sink`` when installed (fast, the
default), else our asyncio sink (``benchmarks.smtp_sink``). Both print ``mesg=<count>``; this
module starts either one, reads its count, and measures its raw capacity with a plain
``smtplib`` client (one persistent connection, then a few threads with one connection each)."""

from __future__ import annotations

import re
import shutil
import smtplib
import sys
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from benchmarks.processes import Processes, free_port, wait_for_port

C_SINK = "/usr/sbin/smtp-sink"
_COUNT = re.compile(rb"mesg=(\d+)")


def c_sink_available() -> bool:
    return shutil.which("smtp-sink") is not None or Path(C_SINK).exists()


class SinkProcess:
    """A running sink on a loopback port; ``count()`` is the messages it has accepted."""

    def __init__(self, processes: Processes, kind: str, *, faults: bool = False) -> None:
        """``faults``: the builtin sink answering the realistic workload's 451s and 550s."""
        if kind == "auto":
            kind = "smtp-sink" if c_sink_available() else "builtin"
        if faults:
            kind = "builtin"  # Postfix's smtp-sink cannot refuse chosen recipients
        self.kind, self.faults = kind, faults
        self.port = free_port()
        self._log = processes.log_path(f"sink-{self.port}")
        self._processes = processes
        self._child = processes.start(f"sink-{self.port}", self._argv())
        wait_for_port(self.port, 15, f"the SMTP sink ({self.kind}) on port {self.port}")

    @property
    def pid(self) -> int:
        return self._child.pid

    def _argv(self) -> list[str]:
        if self.kind == "smtp-sink":
            binary = shutil.which("smtp-sink") or C_SINK
            # -c: running counters on stdout; -u: smtp-sink refuses to run as root without it.
            return [binary, "-c", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"]
        if self.kind == "builtin":
            argv = [sys.executable, "-m", "benchmarks.smtp_sink", "--port", str(self.port)]
            return [*argv, "--faults", "realistic"] if self.faults else argv
        raise ValueError(f"unknown sink {self.kind!r}: use auto, smtp-sink or builtin")

    def count(self) -> int:
        """Messages accepted so far (the last counter the sink printed)."""
        found = _COUNT.findall(self._log.read_bytes()[-4096:])
        return int(found[-1]) if found else 0

    def settled_count(self, expected: int, timeout: float = 3.0) -> int:
        """``count()`` once it reaches ``expected`` or ``timeout`` passes: the builtin sink
        prints its counter periodically, so the last messages show up a moment later."""
        deadline = time.monotonic() + timeout
        while (found := self.count()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def stop(self) -> None:
        self._processes.stop(self._child, grace=5)


def sample_message(number: int = 0) -> EmailMessage:
    """A message shaped like the worker's: multipart/alternative, text and HTML, ~1.5 KB."""
    message = EmailMessage()
    message["From"] = "notifications@example.com"
    message["To"] = f"user{number}@example.com"
    message["Subject"] = f"Welcome to Example, User {number}"
    message["Message-ID"] = f"<{number:032x}@example.com>"
    text = "Hello User. Thanks for signing up. Please confirm your address.\n" * 4
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return message


@dataclass(frozen=True)
class SinkCapacity:
    one_connection: float  # messages/s, one persistent connection
    threaded: float  # messages/s, ``threads`` connections in parallel
    threads: int

    @property
    def best(self) -> float:
        return max(self.one_connection, self.threaded)


def _send_loop(port: int, payload: bytes, seconds: float, counts: list[int]) -> None:
    sent = 0
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            client.sendmail("notifications@example.com", ["user@example.com"], payload)
            sent += 1
    counts.append(sent)


def measure_capacity(port: int, seconds: float = 3.0, threads: int = 4) -> SinkCapacity:
    """Messages/s the sink accepts from ``smtplib``: one connection, then ``threads``."""
    payload = sample_message().as_bytes()
    counts: list[int] = []
    started = time.perf_counter()
    _send_loop(port, payload, seconds, counts)
    one = counts[0] / (time.perf_counter() - started)
    counts.clear()
    workers = [
        threading.Thread(target=_send_loop, args=(port, payload, seconds, counts))
        for _ in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    many = sum(counts) / (time.perf_counter() - started)
    return SinkCapacity(one_connection=one, threaded=many, threads=threads)
