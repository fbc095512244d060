"""The ``email-worker`` console script (also ``python -m email_worker``).

Commands: ``migrate``, ``run``, ``callbacks``, ``beat``, ``dlq list|show|replay|export|purge``,
``topology show|apply``, ``cancel`` and ``demo``. A bad setting stops start-up with exit code 2
and a message naming the variable; a topology the worker cannot live with (passive mode and
something missing, or a declaration the broker refuses) exits 3; ``run`` against a database
that lacks a migration exits 4. The ``dlq`` commands exit 1 when the broker refuses or a record
is not found, and 2 when they refuse to act (see docs/dlq.md); ``topology show`` exits 1 when a
piece is missing; ``cancel`` exits 1 when any id could not be cancelled; ``suppression check``
exits 1 when the address is not suppressed (see docs/suppression.md).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from email_worker import logs
from email_worker.broker.topology import BROKER_ERRORS, TopologyError, connector
from email_worker.cli.cancel import cancel_command, cancel_parser
from email_worker.cli.dlq import EXIT_FAILED, dlq_command, dlq_parser
from email_worker.cli.suppression import suppression_command, suppression_parser
from email_worker.config import PREFIX, Settings
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ops.allocator import cap_arenas

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_TOPOLOGY = 3
EXIT_SCHEMA = 4
# The long-running commands: many threads, the allocator's arenas capped (ops/allocator.py).
SERVICES = ("run", "callbacks", "beat")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"][:1]).upper()
            # The standard OTEL_* variables are read under their own names (config/otel.py).
            name = name if name.startswith("OTEL_") else PREFIX + name
            print(f"configuration error: {name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="email-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the Postgres schema (idempotent)")
    commands.add_parser("run", help="consume email.queue until SIGTERM/SIGINT, then drain")
    commands.add_parser("callbacks", help="deliver status callbacks (a Celery worker)")
    commands.add_parser("beat", help="periodic maintenance (Celery beat)")
    dlq_parser(commands)
    topology = commands.add_parser("topology", help="the broker topology (docs/deployment.md)")
    verbs = topology.add_subparsers(dest="topology_command", required=True)
    for verb, text in (("show", "what exists beside what the worker wants"), ("apply", _APPLY)):
        verbs.add_parser(verb, help=text).add_argument("--json", action="store_true")
    cancel_parser(commands)
    suppression_parser(commands)
    demo = commands.add_parser("demo", help="the whole pipeline on the local services")
    demo.add_argument("--timeout", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in SERVICES:
        cap_arenas()  # before any thread starts (ops/allocator.py)
    settings = load_settings()
    # The services write a line per message: theirs are gathered (logs.LINGER_SECONDS); a
    # command's lines go out at once, in order with what it prints.
    logs.configure(settings.log_level, gather=args.command in ("run", "callbacks"))
    for deprecation in settings.deprecations():
        log.warning(deprecation)
    try:
        return _dispatch(args, settings)
    except TopologyError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return EXIT_TOPOLOGY
    except SchemaBehind as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return EXIT_SCHEMA


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "run":
        from email_worker.app import Worker

        worker = Worker(settings)
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection no longer walks ~100,000 objects (2-4% of the CPU per email).
        gc.collect()
        gc.freeze()
        worker.run()
        return 0
    if args.command in ("callbacks", "beat"):
        from email_worker.app.build import callback_runtime
        from email_worker.callbacks import tasks

        tasks.configure(settings, callback_runtime)
        return tasks.start(args.command, settings)
    if args.command == "dlq":
        return dlq_command(args, settings)
    if args.command == "topology":
        return _topology(args, settings)
    if args.command == "cancel":
        return cancel_command(args, settings)
    if args.command == "suppression":
        return suppression_command(args, settings)
    return _demo(args, settings)


DEMO_EXTRA = (
    "email-worker demo needs the demo extra (its SMTP sink, aiosmtpd): "
    "pip install 'email-worker[demo]', or `make demo` from a checkout"
)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from email_worker.demo.run import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "aiosmtpd":
            raise
        print(DEMO_EXTRA, file=sys.stderr)
        return EXIT_CONFIG
    return run_demo(settings, timeout=args.timeout)


_APPLY = "declare what is missing; change nothing that exists"


def _topology(args: argparse.Namespace, settings: Settings) -> int:
    from email_worker.broker.setup import command
    from email_worker.broker.topology import Topology

    name = f"email-worker topology {args.topology_command}"
    connect = connector(settings.amqp_url.get_secret_value(), 0, name)
    topology, apply_ = Topology.from_settings(settings), args.topology_command == "apply"
    try:
        text, code = command(connect, topology, apply_=apply_, as_json=args.json)
    except BROKER_ERRORS as exc:
        print(f"{name}: the broker is unreachable: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    print(text)
    return code


def _migrate(settings: Settings) -> int:
    from email_worker.ledger.db import Database
    from email_worker.ledger.migrations import migrate

    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    try:
        applied = migrate(db)
    finally:
        db.close()
    print(f"schema up to date ({len(applied)} migration(s) applied)")
    return 0
