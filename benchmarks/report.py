"""The benchmark's report: one Markdown document (printed, and written to ``RESULTS.md`` with
``--write-results``) and a JSON form of the same figures. Formatting only; the figures are
computed by the phases and ``stats``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Any

from benchmarks.report_kernel import kernel_table
from benchmarks.scenario import RunResult, medians
from benchmarks.sinks import SinkCapacity
from benchmarks.stats import format_mib, format_ms, format_rate, format_ratio, per_thousand, ratio

RSS_LIMIT = 150 * 1024 * 1024
TARGET_RATE = 1000.0


@dataclass
class Report:
    command: str
    started: str
    machine: dict[str, str]
    sink_capacity: SinkCapacity | None = None
    consume_capacity: float | None = None
    runs: list[RunResult] = field(default_factory=list)
    # The realistic workload of issue 20 (benchmarks/workloads.py), every round.
    realistic: list[RunResult] = field(default_factory=list)
    realistic_notes: str = ""
    half_rate: RunResult | None = None
    limited: RunResult | None = None  # the peak configuration under a RATE_LIMIT far above it
    signed: RunResult | None = None  # the peak configuration with DKIM (RSA-2048)
    naive: RunResult | None = None
    # The stronger baselines of issue 20, by kind: "tuned" (Celery) and "asyncio".
    stronger: dict[str, RunResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def peak(self) -> RunResult | None:
        """The configuration with the best median run, represented by that run."""
        return max(medians(self.runs), key=lambda r: r.emails_per_s, default=None)

    @property
    def rounds(self) -> int:
        return max((r.round_number for r in self.runs), default=1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


def _label(run: RunResult, report: Report) -> str:
    return f"{run.workers} (round {run.round_number})" if report.rounds > 1 else str(run.workers)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _limits(report: Report) -> list[str]:
    rows = []
    cap = report.sink_capacity
    if cap is not None:
        rows.append(
            ["SMTP sink, smtplib, 1 persistent connection", format_rate(cap.one_connection)]
        )
        rows.append([f"SMTP sink, smtplib, {cap.threads} threads", format_rate(cap.threaded)])
    if report.consume_capacity is not None:
        rows.append(
            ["RabbitMQ consume, pika, prefetch 50, ack each", format_rate(report.consume_capacity)]
        )
    if not rows:
        return []
    return ["## Limits measured in the same run", "", *_table(["what", "messages/s"], rows)]


def _run_row(run: RunResult, report: Report) -> list[str]:
    naive = report.naive.emails_per_s if report.naive else 0.0
    sink = report.sink_capacity.best if report.sink_capacity else 0.0
    lat = run.latency
    return [
        _label(run, report),
        f"{run.sent:,}",
        format_rate(run.publish_per_s),
        format_rate(run.emails_per_s),
        format_rate(run.callbacks_per_s),
        format_ms(lat.p50 if lat else None),
        format_ms(lat.p95 if lat else None),
        format_ms(lat.p99 if lat else None),
        f"{run.cpu_per_thousand('run'):.2f}",
        f"{run.cpu_per_thousand('callbacks'):.2f}",
        format_mib(run.peak_rss("run")),
        format_ratio(ratio(run.emails_per_s, naive)),
        format_ratio(ratio(run.emails_per_s, sink)),
    ]


RUN_HEADER = [
    "worker processes",
    "emails",
    "published/s",
    "emails/s",
    "callbacks/s",
    "p50",
    "p95",
    "p99",
    "CPU s/1k (run)",
    "CPU s/1k (callbacks)",
    "peak RSS/run process",
    "x naive",
    "x sink",
]


def _runs(report: Report) -> list[str]:
    if not report.runs:
        return []
    lines = ["## The worker (`email-worker run` x N + one `email-worker callbacks`)", ""]
    lines += _table(RUN_HEADER, [_run_row(r, report) for r in report.runs])
    lines.append(
        "Latency here is publish→SMTP accept with the whole backlog published at once, so it is "
        "mostly queueing time; see the half-rate figure below for latency under load."
    )
    if report.rounds > 1:
        chosen = ", ".join(
            f"{r.workers} → {format_rate(r.emails_per_s)}/s" for r in medians(report.runs)
        )
        lines += [
            "",
            f"Each configuration ran {report.rounds} times, the configurations alternating; "
            f"the half-rate phase and the verdict use each one's median run ({chosen}).",
        ]
    return [*lines, ""]


def _cpu_parts(run: RunResult) -> list[float]:
    """CPU seconds per 1,000 emails: run, callbacks, then each shared part in report order."""
    ours = [run.cpu_per_thousand("run"), run.cpu_per_thousand("callbacks")]
    return ours + [per_thousand(seconds, run.sent) for seconds in run.machine_cpu.values()]


def cores_busy(run: RunResult) -> float | None:
    """Cores the whole machine kept busy at this run's rate; None without machine figures."""
    if not run.machine_cpu or not run.sent:
        return None
    return run.emails_per_s * sum(_cpu_parts(run)) / 1000


def _cpu_budget(report: Report, which: list[RunResult] | None = None) -> list[str]:
    runs = [r for r in (report.runs if which is None else which) if r.machine_cpu and r.sent]
    if not runs:
        return []
    parts = list(runs[0].machine_cpu)
    cores = os.cpu_count() or 1
    rows = []
    for run in runs:
        values = _cpu_parts(run)
        total = sum(values)
        rows.append(
            [
                _label(run, report),
                *(f"{value:.2f}" for value in values),
                f"**{total:.2f}**",
                f"{cores_busy(run) or 0:.2f}",
                format_rate(cores * 1000 / total) if total else "n/a",
            ]
        )
    header = ["worker processes", "run", "callbacks", *parts, "total", "cores busy"]
    return [
        "## Where the cores go (CPU seconds per 1,000 emails, same window)",
        "",
        *_table([*header, f"ceiling on {cores} cores (emails/s)"], rows),
        "Every part shares the same cores; the ceiling is what this much CPU per email allows "
        "if every core were busy all the time. The harness is the publisher, the template "
        "service and the callback receiver (the gateway's side).",
        "",
    ]


def _kernel(report: Report, runs: list[RunResult], workload: str = "") -> list[str]:
    title = f"### What the kernel does for the worker's processes{workload} (same window)"
    return kernel_table(runs, lambda run: _label(run, report), title)


def _realistic(report: Report) -> list[str]:
    if not report.realistic:
        return []
    rows = [[*_run_row(r, report), f"{r.failed:,}"] for r in report.realistic]
    lines = [
        "## Realistic workload (20-60 KB HTML from a loop, text derived, faults at the sink)",
        "",
        report.realistic_notes,
        "",
        *_table([*RUN_HEADER, "failed (550 by design)"], rows),
    ]
    budget = _cpu_budget(report, report.realistic)
    if budget:
        budget[0] = "### Where the cores go, realistic workload (CPU s per 1,000 emails)"
    return [*lines, *budget, *_kernel(report, report.realistic, ", realistic workload")]


def _half_rate(report: Report) -> list[str]:
    run = report.half_rate
    if run is None or run.latency is None:
        return []
    lat = run.latency
    return [
        "## Latency at half of peak rate",
        "",
        f"{run.sent:,} messages published at {format_rate(run.paced_rate or 0)}/s "
        f"(50% of the peak {format_rate(report.peak.emails_per_s if report.peak else 0)}/s) "
        f"to {run.workers} worker process(es): p50 {format_ms(lat.p50)}, p95 {format_ms(lat.p95)}, "
        f"**p99 {format_ms(lat.p99)}**, max {format_ms(lat.max)}.",
        "",
    ]


def _limiter(report: Report) -> list[str]:
    run, peak = report.limited, report.peak
    if run is None or peak is None or peak.emails_per_s <= 0:
        return []
    before, after = peak.cpu_per_thousand("run"), run.cpu_per_thousand("run")
    return [
        "## The rate limiter's cost",
        "",
        f"The peak configuration ({run.workers} worker process(es)) again with `{run.label}`, "
        f"far above its rate, so every send takes a slot and none waits: "
        f"**{format_rate(run.emails_per_s)} emails/s** "
        f"({run.emails_per_s / peak.emails_per_s:.0%} of its median run without a limit), "
        f"`run` CPU {after:.2f} s per 1,000 against {before:.2f} "
        f"({(after - before) / before if before else 0:+.0%}), p99 "
        f"{format_ms(run.latency.p99 if run.latency else None)}. One run: compare it with "
        "the spread of the unlimited rounds above.",
        "",
    ]


def _dkim(report: Report) -> list[str]:
    run, peak = report.signed, report.peak
    if run is None or peak is None or peak.emails_per_s <= 0:
        return []
    before, after = peak.cpu_per_thousand("run"), run.cpu_per_thousand("run")
    share = run.emails_per_s / peak.emails_per_s
    return [
        "## DKIM's cost (simple workload, RSA-2048)",
        "",
        f"The peak configuration ({run.workers} worker process(es)) again with every message "
        f"signed (relaxed/relaxed, a fresh RSA-2048 key): **{format_rate(run.emails_per_s)} "
        f"emails/s**, {share:.0%} of its median run unsigned (target: at least 50%), `run` "
        f"CPU {after:.2f} s per 1,000 against {before:.2f} ({after - before:+.2f} s). One run: "
        "compare it with the spread of the unsigned rounds above.",
        "",
    ]


def _naive(report: Report) -> list[str]:
    run = report.naive
    if run is None:
        return []
    cpu = run.cpu_per_thousand("run")
    return [
        "## Naive baseline (`benchmarks/baselines/naive_celery.py`, threads pool, concurrency 8)",
        "",
        f"{run.sent:,} emails: **{format_rate(run.emails_per_s)} emails/s**, "
        f"{format_rate(run.callbacks_per_s)} callbacks/s, p99 "
        f"{format_ms(run.latency.p99 if run.latency else None)}, CPU {cpu:.2f} s per 1,000, "
        f"peak RSS {format_mib(run.peak_rss('run'))}.",
        "",
    ]


def _stronger(report: Report) -> list[str]:
    if not report.stronger:
        return []
    peak = report.peak.emails_per_s if report.peak else 0.0
    rows = []
    for run in report.stronger.values():
        rows.append(
            [
                run.label,
                f"{run.sent:,}",
                format_rate(run.emails_per_s),
                format_ms(run.latency.p99 if run.latency else None),
                f"{run.cpu_per_thousand('run'):.2f}",
                format_mib(run.peak_rss("run")),
                format_ratio(ratio(peak, run.emails_per_s)),
            ]
        )
    header = ["baseline", "emails", "emails/s", "p99", "CPU s per 1,000", "peak RSS"]
    return [
        "## Stronger baselines (`benchmarks/baselines/tuned_celery.py`, `asyncio_consumer.py`)",
        "",
        *_table([*header, "worker peak / baseline"], rows),
        "Both keep the guarantees a user would reasonably add (the request id claimed in "
        "Postgres before the send, marked sent after it, the callback posted after the send); "
        "neither keeps the worker's others (leases, retries through delay queues, dead "
        "letters, stored content, an outbox). CPU is the baseline's own process only.",
        "",
    ]


def _scaling(runs: list[RunResult]) -> tuple[str, str, bool]:
    """Throughput grows with processes until the cores are the limit: each step up in
    processes gains at least 5%, unless the step before already kept 90% of the cores busy."""
    ordered = sorted(runs, key=lambda r: r.workers)
    cores = os.cpu_count() or 1
    ok = True
    for before, after in itertools.pairwise(ordered):
        busy = cores_busy(before)
        saturated = busy is not None and busy >= 0.9 * cores
        ok = ok and (after.emails_per_s >= 1.05 * before.emails_per_s or saturated)
    rates = " → ".join(format_rate(r.emails_per_s) for r in ordered)
    busy_text = " → ".join(f"{b:.2f}" for r in ordered if (b := cores_busy(r)) is not None)
    measured = f"{rates}/s" + (f"; cores busy {busy_text} of {cores}" if busy_text else "")
    return "grows with processes until the cores are the limit", measured, ok


def _verdict(report: Report) -> list[str]:
    peak = report.peak
    if peak is None:
        return []
    naive = report.naive.emails_per_s if report.naive else 0.0
    sink = report.sink_capacity.best if report.sink_capacity else 0.0
    half = report.half_rate.latency if report.half_rate else None
    worst_rss = max((r.peak_rss("run") for r in report.runs), default=0)
    checks = [
        (
            f">= {TARGET_RATE:,.0f} emails/s",
            format_rate(peak.emails_per_s),
            peak.emails_per_s >= TARGET_RATE,
        ),
        (
            ">= 10x naive",
            format_ratio(ratio(peak.emails_per_s, naive)),
            naive > 0 and peak.emails_per_s >= 10 * naive,
        ),
        (
            ">= 1/3 of sink capacity",
            format_ratio(ratio(peak.emails_per_s, sink)),
            sink > 0 and peak.emails_per_s * 3 >= sink,
        ),
        (
            "p99 < 1 s at half of peak",
            format_ms(half.p99 if half else None),
            half is not None and half.p99 < 1.0,
        ),
        ("RSS < 150 MiB per run process", format_mib(worst_rss), 0 < worst_rss < RSS_LIMIT),
    ]
    best = max((r.emails_per_s for r in report.stronger.values()), default=0.0)
    if report.stronger:
        checks.append(
            (
                ">= 3x the better stronger baseline",
                format_ratio(ratio(peak.emails_per_s, best)),
                best > 0 and peak.emails_per_s >= 3 * best,
            )
        )
    configurations = medians(report.runs)
    if len(configurations) > 1:
        checks.append(_scaling(configurations))
    rows = [[what, value, "yes" if ok else "**no**"] for what, value, ok in checks]
    return [
        "## Against the targets of issue 4 (peak configuration)",
        "",
        *_table(["target", "measured", "met"], rows),
    ]


def markdown(report: Report) -> str:
    """The whole report as Markdown."""
    lines = [
        "# Benchmark results",
        "",
        f"Run {report.started} with `{report.command}`. How each figure is measured: "
        "[README.md](README.md).",
        "",
        "## Machine",
        "",
        *_table(["", ""], [[k, v] for k, v in report.machine.items()]),
    ]
    lines += _limits(report) + _runs(report) + _cpu_budget(report)
    lines += _kernel(report, report.runs) + _realistic(report)
    lines += _half_rate(report) + _limiter(report) + _dkim(report)
    lines += _naive(report) + _stronger(report)
    lines += _verdict(report)
    if report.errors:
        lines += ["## Errors", "", *(f"- {e}" for e in report.errors), ""]
    return "\n".join(lines).rstrip() + "\n"


def as_dict(report: Report) -> dict[str, Any]:
    return dict(json.loads(report.to_json()))
