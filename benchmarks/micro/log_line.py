"""The JSON outcome line (``email_worker.logs``): the current module against the version before
every field was scrubbed (``git show <ref>:email_worker/logs.py``, loaded as a temporary
module; the working tree is not touched), each writing the pipeline's ``delivered`` line
(``pipeline._log_outcome``'s fields, inside ``request_context``) to a stream that discards it.

Each version is set up by its own ``configure()`` (its handler, filter and formatter) with
``sys.stdout`` pointing at the discarding stream; the root logger is put back afterwards.
Equivalence: both lines parse to the same JSON, the time aside (these fields hold no address).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker import logs

PART = "logs"
# The last commit whose logs.py scrubbed only the message and the exception text.
BEFORE_REF = "b408a00"
_REPO = Path(__file__).resolve().parents[2]
_FIELDS: dict[str, object] = {
    "duration_ms": 41.7,
    "attempt": 1,
    "redelivered": False,
    "recipient_domain": "example.org",
    "recipient_hash": "5d41402abc4b2a76",
    "outcome": "delivered",
}


class _Sink(io.StringIO):
    """A text stream that keeps only the last line written."""

    last = ""

    def write(self, text: str) -> int:
        if text.strip():
            self.last = text
        return len(text)


def load_version(ref: str) -> ModuleType | None:
    """``email_worker/logs.py`` as of ``ref``, imported under another name; ``None`` when git
    or the commit is not there (a shallow clone)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(_REPO), "show", f"{ref}:email_worker/logs.py"],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"logs_{ref}.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location(f"bench_logs_{ref}", path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


class Line:
    """A logger wired like the worker's by ``module.configure()``, writing to a sink."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module, self.sink = module, _Sink()
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        try:
            with redirect_stdout(self.sink):
                module.configure("INFO")
            handlers = root.handlers[:]
        finally:
            root.handlers, root.level = saved[0], saved[1]
        self.logger = logging.getLogger(f"email_worker.pipeline.bench.{name}")
        self.logger.handlers, self.logger.propagate = handlers, False
        self.logger.setLevel(logging.INFO)

    def write(self) -> None:
        with self.module.request_context(
            "req-3c1e9b2a-7f6d-4e58-a0b1-c2d3e4f50617", "corr-9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"
        ):
            self.logger.log(logging.INFO, "message %s", "delivered", extra=_FIELDS)

    def fields(self) -> dict[str, object]:
        self.write()
        for handler in self.logger.handlers:  # a handler may gather lines before writing
            handler.flush()
        found: dict[str, object] = json.loads(self.sink.last)
        found.pop("time", None)
        found.pop("logger", None)  # the two loggers' names differ by design
        return found


def run(rounds: int, scale: float = 1.0, ref: str = BEFORE_REF) -> list[Comparison]:
    """The current line against the one of ``ref``; ``scale`` multiplies the 3,000 lines per
    round. Nothing when ``ref`` cannot be loaded (said on stderr)."""
    before = load_version(ref)
    if before is None:
        print(f"logs: {ref}:email_worker/logs.py is not reachable; skipped", file=sys.stderr)
        return []
    now, then = Line(logs, "now"), Line(before, "before")
    assert now.fields() == then.fields(), f"lines differ: {now.fields()} != {then.fields()}"
    mine, theirs = measure_pair(
        Side("logs.py now (every field scrubbed)", now.write),
        Side(f"logs.py at {ref} (message only)", then.write),
        calls=max(1, int(3000 * scale)),
        rounds=rounds,
    )
    equivalent = "the same JSON fields and values (time aside)"
    return [Comparison(PART, "one outcome line (delivered)", mine, theirs, equivalent)]
