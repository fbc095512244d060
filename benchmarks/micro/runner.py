"""``python -m benchmarks.micro [PART ...] [--rounds N]``: options, the parts in order, the
report (printed; written to ``RESULTS.md`` with ``--write-results``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.micro import (
    content_path,
    dkim_sign,
    html_text,
    http_post,
    log_line,
    mime_build,
    pacing,
    report,
    spans,
)
from benchmarks.micro.timing import Comparison

RESULTS = Path(__file__).parent / "RESULTS.md"
PARTS = ("callback_http", "textify", "mime", "logs", "tracing", "dkim", "pacing", "content")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.micro",
        description="Each hand-written hot-path part against its library, in the same run.",
    )
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (default 5)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the operations per round (default 1.0)"
    )
    parser.add_argument(
        "--logs-before",
        default=log_line.BEFORE_REF,
        metavar="REF",
        help="the commit whose logs.py is the 'before' (default %(default)s)",
    )
    parser.add_argument(
        "--write-results",
        nargs="?",
        const=str(RESULTS),
        metavar="PATH",
        help=f"write the report (default {RESULTS})",
    )
    parser.add_argument(
        "--content-before",
        default=content_path.BEFORE_REF,
        metavar="REF",
        help="the commit whose content path is the 'before' (default %(default)s)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="content: also count each step's instructions with valgrind (minutes)",
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    return parser


def _runs(options: argparse.Namespace) -> dict[str, Callable[[], list[Comparison]]]:
    rounds, scale = options.rounds, options.scale
    return {
        "callback_http": lambda: http_post.run(rounds, scale),
        "textify": lambda: html_text.run(rounds, scale),
        "mime": lambda: mime_build.run(rounds, scale),
        "logs": lambda: log_line.run(rounds, scale, options.logs_before),
        "tracing": lambda: spans.run(rounds, scale),
        "dkim": lambda: dkim_sign.run(rounds, scale),
        "pacing": lambda: pacing.run(rounds, scale),
        "content": lambda: content_path.run(
            rounds, scale, options.content_before, callgrind=options.callgrind
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts; 0 when every part ran and found the outputs equivalent."""
    options = _parser().parse_args(argv)
    unknown = set(options.parts) - set(PARTS)
    if unknown or options.rounds < 1 or options.scale <= 0:
        print(
            f"parts are {', '.join(PARTS)}; --rounds at least 1, --scale above 0", file=sys.stderr
        )
        return 2
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = report.describe_machine()
    found: list[Comparison] = []
    failed = False
    runs = _runs(options)
    for part in options.parts or PARTS:
        print(f"{part} ...", file=sys.stderr, flush=True)
        try:
            found += runs[part]()
        except Exception as exc:  # one part failing (no Postgres) does not stop the others
            print(f"{part}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
    machine["load average at the end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    command = "python -m benchmarks.micro " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report.markdown(
        found, machine, command=command.strip(), started=started, rounds=options.rounds
    )
    print(text)
    if options.write_results:
        Path(options.write_results).write_text(text)
    if options.json:
        Path(options.json).write_text(report.to_json(found, machine))
    return 1 if failed else 0
