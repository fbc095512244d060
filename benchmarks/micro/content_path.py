"""The CPU one email costs in the content path (issue 20): render (sandbox, budget, derived
text), MIME, DKIM and the DATA payload, step by step (``content_steps``), on the throughput
benchmark's realistic workload (a digest of 70-185 items, 20-60 KB of HTML, DKIM RSA-2048) and
its simple one (a three-line template, ~2 KB, unsigned), 40 messages each.

The worker now is compared with the worker at ``BEFORE_REF`` (the commit before this part's
changes), whose ``email_worker``, ``schemas`` and ``templates_client`` are extracted from git
into a temporary folder (``git archive``; the working tree is not touched). Each side runs in
a child process of its own that imports its own tree (checked), so both pay the same for the
pipe; a call is one step over the 40 messages, the child's CPU is what is counted.
Equivalence: for every step both sides' outputs have the same summary (``content_steps
.summary``: the rendered parts; the built message parsed back; signatures that verify with
``dkimpy``).

With ``callgrind=True`` each side also runs once under ``valgrind --tool=callgrind``, which
counts the instructions each step executes: repeatable where CPU times are not (the cores are
shared). The child calls ``os.getppid()`` between steps and callgrind's ``--dump-before=getppid``
cuts the profile there, so each dump holds one step's instructions.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.micro.content_steps import STEPS
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.dkim.keys import SigningKey

PART = "content"
BEFORE_REF = "0ae4c53"  # the last commit before the content path's issue-20 work
MESSAGES = 40
_REPO = Path(__file__).resolve().parents[2]
_TREES = ("email_worker", "schemas", "templates_client")
WORKLOADS: dict[str, tuple[str, ...]] = {
    "realistic": STEPS,
    "simple": tuple(s for s in STEPS if s != "dkim"),  # the simple workload is not signed
}
# Calls (each one step over the 40 messages) per round at scale 1: about a second per side.
CALLS = {"render": 4, "textify": 6, "build": 20, "dkim": 20, "stuff": 40, "email": 4}
_BOOT = (
    "import sys; sys.path[:0] = sys.argv[1:3]; "
    "from benchmarks.micro.content_steps import serve; serve(sys.argv[3:])"
)


def checkout(ref: str, folder: Path) -> Path | None:
    """The worker's packages as of ``ref`` under ``folder``; ``None`` when git or the commit
    is not there (a shallow clone)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(_REPO), "archive", "--format=tar", ref, *_TREES],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _command(tree: Path, workload: str, messages: int, key_file: str, mode: str) -> list[str]:
    args = [str(tree), str(_REPO), workload, str(messages), key_file, mode]
    return [sys.executable, "-c", _BOOT, *args]


class Child:
    """One side: a child process serving the steps of one workload with one tree."""

    def __init__(self, tree: Path, workload: str, messages: int, key_file: str) -> None:
        environment = os.environ | {"PYTHONHASHSEED": "0"}
        self.process = subprocess.Popen(
            _command(tree, workload, messages, key_file, "serve"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        imported = Path(self._ask(None)["ready"]).resolve()
        if not imported.is_relative_to(tree.resolve()):
            raise AssertionError(f"the child imported {imported}, not the tree {tree}")
        self.cpu = 0.0

    def _ask(self, request: dict[str, Any] | None) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        if request is not None:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark child exited ({self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, step: str) -> None:
        self.cpu = self._ask({"run": step, "calls": 1})["cpu"]

    def cpu_seconds(self) -> float:
        """The child's CPU so far, as of its last answer."""
        return self.cpu

    def summary(self, step: str, record: str) -> str:
        return str(self._ask({"summary": step, "record": record})["summary"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the child's loop ends at the end of its input
        self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()


def count(
    tree: Path, workload: str, messages: int, key_file: str, steps: Sequence[str]
) -> dict[str, float]:
    """Instructions per message of each step, counted by callgrind (empty without valgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "cg"
        subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                "-q",
                "--dump-before=getppid",
                f"--callgrind-out-file={out}.%p",
                *_command(tree, workload, messages, key_file, f"count:{','.join(steps)}:1"),
            ],
            check=True,
            env=os.environ | {"PYTHONHASHSEED": "0"},
            timeout=3600,
        )
        dumps = sorted(Path(folder).glob("cg.*.*"), key=lambda p: int(p.suffix[1:]))
        totals = [_total(path) for path in dumps]
    # Dump 1 is start-up and preparation; then one per step.
    if len(totals) != len(steps) + 1:
        raise AssertionError(f"{len(totals)} callgrind dumps for {len(steps)} steps")
    return {name: total / messages for name, total in zip(steps, totals[1:], strict=True)}


def _total(path: Path) -> int:
    found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
    assert found is not None, f"no totals in {path.name}"
    return int(found.group(1))


def _key_file(folder: Path) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path), SigningKey(key).dns_record()


def _instructions_note(
    workload: str, ref: str, now: dict[str, float], then: dict[str, float]
) -> str:
    rows = [
        f"{step} {then[step] / 1e6:.2f} M → {now[step] / 1e6:.2f} M" for step in now if step in then
    ]
    return f"callgrind instructions per message, {workload} workload, at {ref} → now: " + (
        "; ".join(rows)
    )


def run(
    rounds: int,
    scale: float = 1.0,
    ref: str = BEFORE_REF,
    callgrind: bool = False,
    messages: int = MESSAGES,
) -> list[Comparison]:
    """Every step of both workloads over ``messages`` messages, now against ``ref``; nothing
    when ``ref`` cannot be loaded (said on stderr)."""
    found: list[Comparison] = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        before = checkout(ref, folder / "before")
        if before is None:
            print(f"content: {ref} is not reachable with git; skipped", file=sys.stderr)
            return []
        key_file, record = _key_file(folder)
        for workload, steps in WORKLOADS.items():
            sides = _Sides(before, ref, key_file, record, messages)
            found += _workload(workload, steps, sides, rounds, scale)
            if callgrind:
                now, then = (
                    count(tree, workload, messages, key_file, steps) for tree in (_REPO, before)
                )
                if now:
                    note = _instructions_note(workload, ref, now, then)
                    found = [_noted(c, note) if c.case.startswith(workload) else c for c in found]
    return found


def _noted(comparison: Comparison, note: str) -> Comparison:
    return Comparison(
        comparison.part,
        comparison.case,
        comparison.ours,
        comparison.library,
        comparison.equivalent,
        (*comparison.notes, note),
    )


class _Sides(NamedTuple):
    before: Path
    ref: str
    key_file: str
    record: str  # the DKIM key's DNS record, for the signatures' check
    messages: int


def _workload(
    workload: str, steps: Sequence[str], sides: _Sides, rounds: int, scale: float
) -> list[Comparison]:
    found = []
    ref, messages = sides.ref, sides.messages
    now = Child(_REPO, workload, messages, sides.key_file)
    then = Child(sides.before, workload, messages, sides.key_file)
    try:
        for step in steps:
            if now.summary(step, sides.record) != then.summary(step, sides.record):
                raise AssertionError(f"{workload} {step}: the outputs differ from {ref}'s")
            mine, theirs = measure_pair(
                Side("now", partial(now.run, step), messages, now.cpu_seconds),
                Side(f"worker at {ref}", partial(then.run, step), messages, then.cpu_seconds),
                calls=max(1, int(CALLS[step] * scale)),
                rounds=rounds,
            )
            equivalent = "the same outputs at every step (content_steps.summary)"
            found.append(Comparison(PART, f"{workload}: {step}", mine, theirs, equivalent))
    finally:
        now.close()
        then.close()
    return found
