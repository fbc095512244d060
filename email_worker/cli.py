"""The ``email-worker`` console script (also ``python -m email_worker``).

Commands: ``migrate``, ``run``, ``callbacks``, ``beat``, ``dlq list``, ``demo``. A bad setting
stops start-up with exit code 2 and a message naming the variable; a topology conflict exits 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pika
from pydantic import ValidationError

from email_worker import logs
from email_worker.config import PREFIX, Settings
from email_worker.topology import TopologyError, connection_parameters

EXIT_CONFIG = 2
EXIT_TOPOLOGY = 3


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = PREFIX + "_".join(str(part) for part in error["loc"][:1]).upper()
            print(f"configuration error: {name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="email-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the Postgres schema (idempotent)")
    commands.add_parser("run", help="consume email.queue until SIGTERM/SIGINT, then drain")
    commands.add_parser("callbacks", help="deliver status callbacks (a Celery worker)")
    commands.add_parser("beat", help="periodic maintenance (Celery beat)")
    dlq = commands.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="dlq_command", required=True
    )
    listing = dlq.add_parser("list", help="one line per record; leaves the queue untouched")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--reason", help="only records with this failure_reason")
    listing.add_argument("--limit", type=int, default=1000)
    demo = commands.add_parser("demo", help="the whole pipeline on the local services")
    demo.add_argument("--timeout", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    logs.configure(settings.log_level)
    try:
        return _dispatch(args, settings)
    except TopologyError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return EXIT_TOPOLOGY


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "run":
        from email_worker.app import Worker

        Worker(settings).run()
        return 0
    if args.command in ("callbacks", "beat"):
        from email_worker import tasks

        tasks.configure(settings)
        return tasks.start(args.command, settings)
    if args.command == "dlq":
        return _dlq_list(settings, as_json=args.json, reason=args.reason, limit=args.limit)
    from email_worker.demo import run_demo

    return run_demo(settings, timeout=args.timeout)


def _migrate(settings: Settings) -> int:
    from email_worker.db import Database
    from email_worker.migrations import migrate

    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    try:
        applied = migrate(db)
    finally:
        db.close()
    print(f"schema up to date ({len(applied)} migration(s) applied)")
    return 0


def _dlq_list(settings: Settings, *, as_json: bool, reason: str | None, limit: int) -> int:
    from email_worker.dlq import browse, format_line

    params = connection_parameters(settings.amqp_url.get_secret_value(), 0, "email-worker dlq")
    connection = pika.BlockingConnection(params)
    try:
        for record in browse(connection, settings.failed_queue, limit=limit, reason=reason):
            print(format_line(record, as_json=as_json))
    finally:
        connection.close()
    return 0
