"""``python -m tests.fuzz TARGET --seconds N``: run one fuzz target (or ``all``) for N seconds.

Hypothesis generates batches of examples with fresh random seeds until the time is up; the first
failure is shrunk, printed with its minimal input, and the run exits with status 1. An input
that takes longer than ``SLOW_SECONDS`` is a failure too."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fuzz.targets import TARGETS, Target

SLOW_SECONDS = 2.0
BATCH = 200


def run(target: Target, seconds: float, batch_size: int = BATCH) -> int:
    """Run ``target`` for ``seconds`` (whole batches: one at least); returns the number of
    inputs tried. Raises the property's error, noted with the minimal input, on failure."""
    deadline = time.monotonic() + seconds
    tried = 0
    batch = 0
    while not tried or time.monotonic() < deadline:
        batch += 1

        @seed(time.time_ns() + batch)
        @settings(
            max_examples=batch_size,
            deadline=SLOW_SECONDS * 1000,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(target.strategy)
        def check(value: Any) -> None:
            target.check(value)

        check()
        tried += batch_size
    return tried


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", nargs="?", help=f"one of {', '.join(TARGETS)}, or 'all'")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    options = parser.parse_args(argv)
    if options.list or not options.target:
        print("\n".join(TARGETS))
        return 0
    names = list(TARGETS) if options.target == "all" else [options.target]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; --list shows them")
    for name in names:
        started = time.monotonic()
        try:
            tried = run(TARGETS[name], options.seconds)
        except Exception as failure:  # the property failed: hypothesis noted the input
            print("".join(traceback.format_exception(failure)), file=sys.stderr)
            print(f"{name}: FAILED (the minimal input is above)")
            return 1
        print(f"{name}: {tried} inputs in {time.monotonic() - started:.0f} s, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
