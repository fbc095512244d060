"""The report's table of what the kernel does for the worker's own processes (issue 20: why
`run` costs what it costs): the system share of their CPU, context switches per email and the
threads of a `run` process, over the same window as "Where the cores go". Formatting only."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.scenario import ProcessFigures, RunResult
from benchmarks.stats import per_thousand

HEADER = [
    "worker processes",
    "run CPU s/1k",
    "of which kernel",
    "context switches per email (run)",
    "threads per run process",
    "callbacks CPU s/1k",
    "of which kernel",
]


def _of(run: RunResult, kind: str) -> list[ProcessFigures]:
    return [p for p in run.processes if p.name.startswith(kind)]


def system_per_thousand(run: RunResult, kind: str) -> float:
    """System (kernel) CPU seconds per 1,000 sent emails of the ``run`` or ``callbacks``
    processes, summed: the part of ``cpu_per_thousand`` spent in the kernel."""
    return per_thousand(sum(p.system_seconds for p in _of(run, kind)), run.sent)


def switches_per_email(run: RunResult, kind: str) -> float:
    """Context switches (voluntary + nonvoluntary, every thread) per sent email."""
    total = sum(p.context_switches for p in _of(run, kind))
    return total / run.sent if run.sent else 0.0


def threads_text(run: RunResult) -> str:
    """Threads of a ``run`` process at the end of the window: one number, or the range."""
    counts = sorted(p.threads for p in _of(run, "run"))
    if not counts:
        return "n/a"
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"


def _cpu_and_kernel(run: RunResult, kind: str) -> list[str]:
    total, kernel = run.cpu_per_thousand(kind), system_per_thousand(run, kind)
    share = f" ({kernel / total:.0%})" if total > 0 else ""
    return [f"{total:.2f}", f"{kernel:.2f}{share}"]


def kernel_table(runs: list[RunResult], label: Callable[[RunResult], str], title: str) -> list[str]:
    """The Markdown table of ``runs`` under ``title``; nothing when no run has these figures
    (the processes' threads are always at least one where they were measured)."""
    measured = [r for r in runs if r.sent and any(p.threads for p in r.processes)]
    if not measured:
        return []
    rows = [
        [
            label(run),
            *_cpu_and_kernel(run, "run"),
            f"{switches_per_email(run, 'run'):.1f}",
            threads_text(run),
            *_cpu_and_kernel(run, "callbacks"),
        ]
        for run in measured
    ]
    lines = [title, "", "| " + " | ".join(HEADER) + " |", "| " + " | ".join(["---"] * 7) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [
        *lines,
        "",
        "Same window and emails as the table above: *kernel* is the system time (`stime`) in "
        "the CPU figure, what the kernel spent for the process (system calls, the network "
        "stack, scheduling), and every context switch is one of its threads leaving a core "
        "(a blocking call, a GIL hand-off, a wake-up of another thread), so many switches per "
        "email beside a large kernel share mean `run` pays for threads handing work to each "
        "other rather than for its own work.",
        "",
    ]
