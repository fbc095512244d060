"""The benchmark command (``python -m benchmarks``): parses the options, starts the shared
pieces (sink, HTTP services), runs the phases in order (limits, the worker with 1/2/4
processes, latency at half of peak, the naive baseline), and prints and optionally writes the
report. A phase that fails is reported and the others still run; the exit status is 1 then.
Every child process is stopped on the way out, also on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from benchmarks import broker, machine, report, sinks
from benchmarks.baseline_runs import BASELINES, run_baseline, run_naive
from benchmarks.http_services import HttpServices
from benchmarks.processes import Processes
from benchmarks.scenario import Scenario, Target
from benchmarks.workloads import realistic
from email_worker.config import Settings

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add = parser.add_argument
    add("--messages", type=int, default=20_000, help="emails per worker run (default 20000)")
    add("--workers", default="1,2,4", help="worker process counts to run (default 1,2,4)")
    add(
        "--rounds",
        type=_positive,
        default=1,
        help="run every worker configuration this many times, alternating; the verdict uses "
        "each configuration's median run (default 1)",
    )
    add("--naive-messages", type=int, default=2_000, help="emails for the naive baseline")
    add("--half-rate-seconds", type=float, default=20.0, help="length of the paced run")
    add("--capacity-seconds", type=float, default=3.0, help="length of each sink measurement")
    add("--capacity-messages", type=int, default=10_000, help="messages for RabbitMQ consume")
    add("--sink", choices=("auto", "smtp-sink", "builtin"), default="auto")
    add("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    add(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an admin URL: each run creates and drops its own database",
    )
    add("--timeout", type=float, default=None, help="seconds per worker run (default scales)")
    add("--log-level", default="INFO", help="EMAIL_WORKER_LOG_LEVEL for the worker processes")
    add(
        "--baseline-messages",
        type=int,
        default=10_000,
        help="emails for each stronger baseline (tuned Celery, asyncio consumer)",
    )
    add(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RATE",
        help="RATE_LIMIT of the rate limiter's cost run (the peak configuration once more; "
        "default 10 x its emails/s, at least 1000: far above what it achieves)",
    )
    add("--realistic-messages", type=int, default=5_000, help="emails per realistic run")
    add("--realistic-workers", type=int, default=2, help="worker processes, realistic runs")
    add(
        "--skip",
        action="append",
        default=[],
        choices=(
            "limits",
            "half-rate",
            "limiter",
            "dkim",
            "naive",
            "tuned",
            "asyncio",
            "realistic",
        ),
    )
    add(
        "--write-results",
        nargs="?",
        const=str(RESULTS),
        default=None,
        metavar="PATH",
        help=f"write the Markdown report (default path {RESULTS})",
    )
    add("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    return parser.parse_args(argv)


def _phase(rep: report.Report, name: str, action: Callable[[], None]) -> None:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        action()
    except Exception as exc:  # a failed phase is reported; the others still run
        rep.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"[bench] {name} FAILED: {exc}", file=sys.stderr, flush=True)


def _limits(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    rep.sink_capacity = sinks.measure_capacity(target.sink.port, args.capacity_seconds)
    queue = f"bench-{uuid.uuid4().hex[:10]}.capacity"
    queue_type = Settings().queue_type
    rep.consume_capacity = broker.consume_capacity(
        target.amqp_url, queue, args.capacity_messages, queue_type
    )


def _worker_runs(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    timeout = args.timeout or 120 + args.messages / 100
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    # Rounds alternate the configurations, so a drift of the machine's speed spreads over all.
    for number, count in itertools.product(range(1, args.rounds + 1), counts):
        label = f"{count} worker process(es)"
        label += f", round {number} of {args.rounds}" if args.rounds > 1 else ""

        def one(workers: int = count, name: str = label, round_number: int = number) -> None:
            result = Scenario(target, name, workers, args.messages).run(timeout)
            result.round_number = round_number
            rep.runs.append(result)
            _progress(result)

        _phase(rep, label, one)


def _dkim_key(folder: Path) -> str | None:
    """An RSA-2048 key for the realistic runs, when this worker signs (``DKIM_*`` settings)."""
    if "dkim_private_key_file" not in Settings.model_fields:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "bench-dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _realistic_runs(
    target: Target, args: argparse.Namespace, rep: report.Report, folder: Path
) -> None:
    """The realistic workload, ``--rounds`` times, on a sink of its own that refuses 3%."""
    key = _dkim_key(folder)
    workload = realistic(key)
    rep.realistic_notes = (
        f"{args.realistic_messages:,} emails per run, {args.realistic_workers} worker "
        f"process(es), DKIM {'RSA-2048 on' if key else 'off (this worker cannot sign)'}, the "
        "builtin sink answering 2% of recipients 451 once and 1% 550 (dead-lettered by "
        "design; emails/s counts the sent ones). Retry delays 1,2,5 s."
    )
    faulty = sinks.SinkProcess(target.processes, "builtin", faults=True)
    try:
        aimed = dataclasses.replace(target, sink=faulty)
        timeout = args.timeout or 120 + args.realistic_messages / 50
        for number in range(1, args.rounds + 1):
            label = f"realistic, round {number} of {args.rounds}"

            def one(name: str = label, round_number: int = number) -> None:
                result = Scenario(
                    aimed, name, args.realistic_workers, args.realistic_messages, workload
                ).run(timeout)
                result.round_number = round_number
                rep.realistic.append(result)
                _progress(result)

            _phase(rep, label, one)
    finally:
        faulty.stop()


def _half_rate(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    peak = rep.peak
    if peak is None or peak.emails_per_s <= 0:
        raise RuntimeError("no successful worker run to take the peak rate from")
    paced = peak.emails_per_s / 2
    messages = min(args.messages, max(200, int(paced * args.half_rate_seconds)))
    scenario = Scenario(target, "half of peak rate", peak.workers, messages)
    rep.half_rate = scenario.run(120 + messages / paced * 2, rate=paced)
    _progress(rep.half_rate)


def _limiter_cost(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    """The peak configuration again, with ``RATE_LIMIT`` far above its rate: every send takes
    a slot from the limiter (batches from Postgres), none waits; the difference is its cost."""
    peak = rep.peak
    if peak is None or peak.emails_per_s <= 0:
        raise RuntimeError("no successful worker run to take the peak rate from")
    limit = args.rate_limit or max(1000.0, 10 * peak.emails_per_s)
    label = f"RATE_LIMIT={limit:g}"
    scenario = Scenario(target, label, peak.workers, args.messages, settings={"rate_limit": limit})
    rep.limited = scenario.run(args.timeout or 120 + args.messages / 100)
    _progress(rep.limited)


def _dkim_cost(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    """The peak configuration again on the simple workload, every message DKIM-signed with a
    fresh RSA-2048 key (issue 17: signed throughput at least half of unsigned)."""
    peak = rep.peak
    if peak is None or peak.emails_per_s <= 0:
        raise RuntimeError("no successful worker run to take the peak rate from")
    key = _dkim_key(target.processes.log_dir)
    if key is None:
        raise RuntimeError("this worker has no DKIM settings")
    dkim = realistic(key).settings  # the DKIM part only below: no faults, no other delays
    settings = {k: v for k, v in dkim.items() if k.startswith("dkim_")}
    scenario = Scenario(target, "DKIM RSA-2048", peak.workers, args.messages, settings=settings)
    rep.signed = scenario.run(args.timeout or 120 + args.messages / 100)
    _progress(rep.signed)


def _progress(run: object) -> None:
    print(f"[bench]   {run}", file=sys.stderr, flush=True)


def _run_phases(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    if "limits" not in args.skip:
        _phase(rep, "limits (sink and broker capacity)", lambda: _limits(target, args, rep))
    _worker_runs(target, args, rep)
    if "realistic" not in args.skip:
        _realistic_runs(target, args, rep, target.processes.log_dir)
    if "half-rate" not in args.skip:
        _phase(rep, "latency at half of peak rate", lambda: _half_rate(target, args, rep))
    if "limiter" not in args.skip:
        _phase(rep, "the rate limiter's cost", lambda: _limiter_cost(target, args, rep))
    if "dkim" not in args.skip:
        _phase(rep, "DKIM's cost", lambda: _dkim_cost(target, args, rep))
    _baseline_runs(target, args, rep)


def _baseline_runs(target: Target, args: argparse.Namespace, rep: report.Report) -> None:
    """The naive baseline, then the stronger ones (tuned Celery, the asyncio consumer)."""
    if "naive" not in args.skip:
        timeout = 120 + args.naive_messages / 5  # it does 10-80/s depending on the load

        def naive() -> None:
            rep.naive = run_naive(target, args.naive_messages, timeout)

        _phase(rep, "naive Celery baseline", naive)
    for kind in ("tuned", "asyncio"):
        if kind in args.skip:
            continue

        def stronger(k: str = kind) -> None:
            timeout = 120 + args.baseline_messages / 20
            rep.stronger[k] = run_baseline(target, BASELINES[k], args.baseline_messages, timeout)
            _progress(rep.stronger[k])

        _phase(rep, BASELINES[kind].label, stronger)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: children stopped, queues deleted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every phase succeeded, 1 otherwise."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    log_dir = Path(tempfile.mkdtemp(prefix="ew-bench-"))
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rep = report.Report(command=command.strip(), started=started, machine={})
    processes, services = Processes(log_dir), HttpServices().start()
    try:
        sink = sinks.SinkProcess(processes, args.sink)
        rep.machine = machine.describe(args.amqp_url, args.database_url, sink.kind)
        target = Target(args.amqp_url, args.database_url, sink, services, processes, args.log_level)
        _run_phases(target, args, rep)
    except KeyboardInterrupt:
        rep.errors.append("interrupted")
    finally:
        processes.stop_all()
        services.stop()
    return _output(rep, args, log_dir)


def _output(rep: report.Report, args: argparse.Namespace, log_dir: Path) -> int:
    text = report.markdown(rep)
    print(text)
    if args.write_results:
        Path(args.write_results).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(rep.to_json(), encoding="utf-8")
    print(f"[bench] process logs: {log_dir}", file=sys.stderr)
    return 1 if rep.errors else 0
