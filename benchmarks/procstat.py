"""CPU time and memory of a running process, read from ``/proc`` (Linux): no dependency, and
the numbers are exactly what the kernel accounts (``utime + stime``; ``VmHWM`` is the peak
resident set size since the process started)."""

from __future__ import annotations

import os
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
