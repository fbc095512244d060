"""Child processes of the benchmark: started with their output in a log file, always stopped
(SIGTERM, then SIGKILL after a grace period) by the registry that started them, plus the small
waiting and port primitives every phase uses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class BenchmarkError(RuntimeError):
    """A phase could not complete (a timeout, a child that died, a count that does not add up)."""


def free_port() -> int:
    """A TCP port free on loopback right now (the usual small race is acceptable here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``predicate`` until true; raises ``BenchmarkError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise BenchmarkError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_port(port: int, timeout: float, what: str) -> None:
    """Wait until something accepts TCP connections on loopback ``port``."""

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(answers, timeout, what)


class Processes:
    """Every child the benchmark starts; ``stop_all`` (also on errors) leaves none behind."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr appended to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                list(argv),
                env=dict(env if env is not None else os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not them
            )
        self._children.append((name, child))
        return child

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def check_alive(self, *children: subprocess.Popen[bytes]) -> None:
        """Raise ``BenchmarkError`` when one of ``children`` has exited."""
        for name, child in self._children:
            if child in children and child.poll() is not None:
                raise BenchmarkError(
                    f"{name} exited with {child.returncode}; see {self.log_path(name)}"
                )

    def stop(self, *children: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM the given children (all when none given), SIGKILL what outlives ``grace``."""
        chosen = [(n, c) for n, c in self._children if not children or c in children]
        for _, child in chosen:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + grace
        for _, child in chosen:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        self._children = [(n, c) for n, c in self._children if (n, c) not in chosen]

    def stop_all(self) -> None:
        self.stop(grace=15.0)
