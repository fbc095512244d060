"""CPU time and memory of a running process, read from ``/proc`` (Linux): no dependency, and
the numbers are exactly what the kernel accounts (``utime + stime``; ``VmHWM`` is the peak
resident set size since the process started). Also what the kernel does for a process: its
system time, context switches and threads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """One reading of a process: CPU seconds used so far, current and peak RSS in bytes."""

    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int


def parse_cpu_seconds(stat_line: str, ticks: int = _TICKS, *, children: bool = False) -> float:
    """User + system CPU seconds from one ``/proc/<pid>/stat`` line, with ``children`` plus
    those of its children that have exited and been waited for. The command name sits in
    parentheses and may itself hold spaces or parentheses, so fields count from the last ')'."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    # After the name: state is field 3 of the man page; utime and stime are fields 14 and 15,
    # cutime and cstime 16 and 17.
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / ticks


def parse_system_seconds(stat_line: str, ticks: int = _TICKS) -> float:
    """System (kernel) CPU seconds, ``stime``, of one ``/proc/<pid>/stat`` line: every thread
    of the process, those that have ended included (fields counted as in the function above)."""
    return int(stat_line[stat_line.rindex(")") + 2 :].split()[12]) / ticks


def parse_status_count(status_text: str, key: str) -> int:
    """A plain number line of ``/proc/<pid>/status`` (``Threads``, ...); 0 when absent."""
    for line in status_text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def parse_context_switches(status_text: str) -> int:
    """Voluntary + nonvoluntary context switches of one ``status`` text. Hazard: in
    ``/proc/<pid>/status`` these are the main thread's only (unlike ``stat``'s CPU times),
    so a process's figure sums ``/proc/<pid>/task/<tid>/status`` over its threads."""
    return parse_status_count(status_text, "voluntary_ctxt_switches") + parse_status_count(
        status_text, "nonvoluntary_ctxt_switches"
    )


def switches_between(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    """Context switches between two readings of ``{thread id: switches}``: each thread's
    difference, a thread started in between with all of its own. A thread that ended in
    between takes its switches since the first reading with it (the kernel keeps them only
    for ``getrusage`` of the process itself), so this is a lower bound. A reused thread id
    (its count now below the first reading's) is a new thread and counts all of its own."""
    total = 0
    for tid, count in after.items():
        start = before.get(tid, 0)
        total += count - start if count >= start else count
    return total


def parse_status_kib(status_text: str, key: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` in bytes (0 when absent, e.g. a zombie)."""
    for line in status_text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def sample(pid: int) -> Sample | None:
    """The process's current figures, ``None`` when it has already gone."""
    base = Path("/proc") / str(pid)
    try:
        stat_line = (base / "stat").read_text()
        status = (base / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return Sample(
        cpu_seconds=parse_cpu_seconds(stat_line),
        rss_bytes=parse_status_kib(status, "VmRSS"),
        peak_rss_bytes=parse_status_kib(status, "VmHWM"),
    )


@dataclass(frozen=True)
class Activity:
    """One reading of what the kernel did for a process so far: system CPU seconds,
    context switches per thread id, and the number of threads now."""

    system_seconds: float
    switches: Mapping[int, int]
    threads: int


def activity(pid: int) -> Activity | None:
    """The process's kernel figures now, ``None`` when it has already gone."""
    base = Path("/proc") / str(pid)
    switches: dict[int, int] = {}
    try:
        stat_line = (base / "stat").read_text()
        status = (base / "status").read_text()
        tasks = list((base / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return None
    for task in tasks:
        try:
            switches[int(task.name)] = parse_context_switches((task / "status").read_text())
        except OSError:  # the thread ended between the listing and the read
            continue
    return Activity(
        parse_system_seconds(stat_line), switches, parse_status_count(status, "Threads")
    )


def command_name(stat_line: str) -> str:
    """The command name (``comm``) of a ``/proc/<pid>/stat`` line."""
    return stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]


def cpu_of_commands(commands: frozenset[str]) -> dict[int, tuple[str, float]]:
    """``{pid: (command, CPU seconds so far)}`` of every process whose command name is one of
    ``commands`` (e.g. ``postgres``, ``beam.smp``): the shared services' share of the cores.

    Exited children count in their parent's figure: a Postgres backend or autovacuum worker
    that ends between two readings moves into the postmaster's, so the difference of two
    totals stays the CPU used in between (without it, a short window could come out at 0)."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:  # gone between the listing and the read
            continue
        name = command_name(stat_line)
        if name in commands:
            found[int(entry.name)] = (name, parse_cpu_seconds(stat_line, children=True))
    return found
