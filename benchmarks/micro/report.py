"""The micro-benchmarks' report: the machine, one table per part, and a verdict per part drawn
from the figures by one rule (``verdict``). Formatting only; ``timing`` measures."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from importlib import metadata
from pathlib import Path

from benchmarks.machine import cpu_model
from benchmarks.micro.timing import Comparison, format_us

PART_TRACING = "tracing"
KEEP_GAIN = 0.20  # below this CPU saving against the best library, the library should win
LIBRARIES = (
    "httpx",
    "html2text",
    "psycopg2-binary",
    "python-json-logger",
    "opentelemetry-sdk",
    "dkimpy",
    "cryptography",
)
# Where each part sits on the data path: what "hot" means for it.
HOT_PATH = {
    "callback_http": "one POST per email, in the `callbacks` process",
    "textify": "once per email whose template ships no text body (the throughput "
    "benchmark's template ships none), in `run`",
    "mime": "once per email, in `run`",
    "logs": "one line per email, in `run`",
    "tracing": "every message, in `run`",
    "dkim": "once per email when DKIM_* are set, in `run`",
    "pacing": "every send (`wait_turn` and `report`), in `run`",
    "content": "every email, in `run` (the realistic workload: a 20-60 KB digest, DKIM)",
}
TITLES = {
    "callback_http": "`callback_http.py` (http.client) vs httpx",
    "textify": "`textify.py` (regex pass) vs html.parser and html2text",
    "mime": "`mime.py` (hand-built multipart) vs `EmailMessage`",
    "logs": "`logs.py` outcome line, now vs before field scrubbing",
    "tracing": "tracing per message: off (`NoSpans`) vs before the hooks, and on vs off",
    "dkim": "`dkim/` (relaxed canonicalisation, cryptography) vs dkimpy",
    "pacing": "`pacing/` per send: no limit, and a RATE_LIMIT far above the rate, vs `NoPacer`",
    "content": "the content path per email (render, text, MIME, DKIM), now vs before issue 20",
}


def describe_machine() -> dict[str, str]:
    """Cores, CPU model, load, Python, the libraries compared, the commit."""
    cpuinfo = ""
    with suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    versions = []
    for name in LIBRARIES:
        with suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu_model(cpuinfo),
        "load average at start": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "libraries": ", ".join(versions),
        "commit": _commit(),
    }


def _commit() -> str:
    folder = str(Path(__file__).parent)
    with suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", "../../email_worker"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return head + (" + uncommitted changes in email_worker/" if dirty else "")
    return "unknown"


def verdict(part: str, found: Sequence[Comparison]) -> str:
    """Keep when ours saves at least ``KEEP_GAIN`` of the best library's CPU in every case;
    replace when it saves less in every case; otherwise say which cases gain."""
    if part == "logs":
        now, before = found[0].ours.cpu_us, found[0].library.cpu_us
        cost = (
            "no measurable cost (within 10%, the rounds' spread)"
            if abs(now - before) < 0.1 * before
            else f"{now - before:+.1f} µs per line ({now / before - 1:+.0%})"
        )
        return (
            f"scrubbing every field: {format_us(now)} per line now, {format_us(before)} before: "
            f"{cost}. Hot path: {HOT_PATH[part]}."
        )
    if part == PART_TRACING:
        return _tracing_verdict(found)
    if part == "content":
        steps = [
            f"{c.case} {format_us(c.library.cpu_us)} → {format_us(c.ours.cpu_us)} ({-c.gain:+.0%})"
            for c in found
        ]
        return f"CPU per email, before → now: {'; '.join(steps)}. Hot path: {HOT_PATH[part]}."
    if part == "pacing":
        costs = [
            f"{c.case}: {c.ours.cpu_us - c.library.cpu_us:+.1f} µs of CPU per send" for c in found
        ]
        return (
            f"the limiter's cost against `NoPacer`: {'; '.join(costs)}. Hot path: {HOT_PATH[part]}."
        )
    best: dict[str, Comparison] = {}
    for comparison in found:  # per case, the cheapest library is the one to beat
        held = best.get(comparison.case)
        if held is None or comparison.library.cpu_us < held.library.cpu_us:
            best[comparison.case] = comparison
    gains = [f"{_saving(c)} than {c.library.label} ({c.case})" for c in best.values()]
    kept = [c.gain >= KEEP_GAIN for c in best.values()]
    if all(kept):
        word = "**keep**: the gain is reproduced"
    elif not any(kept):
        word = f"**replace by the library**: the gain is under {KEEP_GAIN:.0%}"
    else:
        word = f"**mixed**: the gain reaches {KEEP_GAIN:.0%} in some cases only"
    return f"{word}: {'; '.join(gains)}. Hot path: {HOT_PATH.get(part, '?')}."


def _tracing_verdict(found: Sequence[Comparison]) -> str:
    """Off must cost nothing measurable; on is reported for information."""
    off, on = found[0], found[-1]
    now, before = off.ours.cpu_us, off.library.cpu_us
    cost = (
        "no measurable cost (within 10%, the rounds' spread)"
        if abs(now - before) < 0.1 * before
        else f"{now - before:+.1f} µs per message ({now / before - 1:+.0%})"
    )
    extra = on.ours.cpu_us - on.library.cpu_us
    return (
        f"tracing off: {format_us(now)} per message now, {format_us(before)} before the hooks: "
        f"{cost}. Tracing on (for information): {extra:+.0f} µs of CPU per message "
        f"({on.ours.cpu_us / on.library.cpu_us - 1:+.0%} of this in-memory path; six spans, "
        f"batched and encoded). Hot path: {HOT_PATH[PART_TRACING]}."
    )


def _saving(c: Comparison) -> str:
    per_op = format_us(abs(c.library.cpu_us - c.ours.cpu_us))
    if c.gain >= 0:
        return f"{c.gain:.0%} less CPU ({per_op} per operation)"
    return f"{-c.gain:.0%} more CPU ({per_op} per operation)"


def _table(found: Sequence[Comparison]) -> list[str]:
    lines = [
        "| case | library | CPU ours | CPU library | library / ours | wall ours | wall library"
        " | CPU per round, ours | CPU per round, library |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for c in found:
        other = ""
        mine, theirs = c.ours.other_cpu_us, c.library.other_cpu_us
        # (The content part's sides run in child processes: their CPU is the whole figure.)
        if mine is not None and theirs is not None and c.part != "content":
            other = f" (server {format_us(mine)} / {format_us(theirs)})"
        lines.append(
            f"| {c.case} | {c.library.label} | {format_us(c.ours.cpu_us)} "
            f"| {format_us(c.library.cpu_us)} | {c.ratio:.2f}x{other} | {format_us(c.ours.wall_us)}"
            f" | {format_us(c.library.wall_us)} | {_rounds(c.ours.rounds_cpu_us)}"
            f" | {_rounds(c.library.rounds_cpu_us)} |"
        )
    return lines


def _rounds(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def markdown(
    found: Sequence[Comparison], machine: dict[str, str], *, command: str, started: str, rounds: int
) -> str:
    """The whole report: machine, method, one section per part with its table and verdict."""
    lines = [
        "# Micro-benchmarks: the hand-written hot-path parts against their libraries",
        "",
        f"Run `{command}` on {started}; written by the command itself (see "
        "[README.md](../README.md#micro-benchmarks) for what each part measures).",
        "",
        *[f"- **{key}**: {value}" for key, value in machine.items()],
        "",
        f"CPU and wall time per operation, median of {rounds} rounds; in each round the two "
        "sides alternate in ten slices, so the machine's drift falls on both. CPU is "
        "`time.process_time()` of the benchmark process; per-round CPU figures are in µs. "
        f"Verdict rule: keep a part when it saves at least {KEEP_GAIN:.0%} of the CPU of the "
        "cheapest equivalent library in every case.",
    ]
    for part in dict.fromkeys(c.part for c in found):
        mine = [c for c in found if c.part == part]
        notes = dict.fromkeys(note for c in mine for note in c.notes)
        lines += ["", f"## {TITLES.get(part, part)}", "", *_table(mine), ""]
        checks = dict.fromkeys((c.case, c.equivalent) for c in mine)
        if len({equivalent for _, equivalent in checks}) == 1:
            lines.append(f"Equivalence: {mine[0].equivalent}.")
        else:
            lines += [f"Equivalence ({case}): {equivalent}." for case, equivalent in checks]
        lines += [f"Note: {note}." for note in notes]
        lines += ["", f"Verdict: {verdict(part, mine)}"]
    return "\n".join(lines) + "\n"


def to_json(found: Sequence[Comparison], machine: dict[str, str]) -> str:
    rows = [dataclasses.asdict(c) | {"ratio": c.ratio, "gain": c.gain} for c in found]
    return json.dumps({"machine": machine, "comparisons": rows}, indent=2)
