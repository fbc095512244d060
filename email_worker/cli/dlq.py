"""``email-worker dlq list|show|replay|export|purge`` (CONTRACT section 8; the runbook is
docs/dlq.md): the arguments, their refusals, and each verb over one broker connection.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from email_worker.broker.topology import BROKER_ERRORS, Connection, connector
from email_worker.config import Settings

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXPORT_STATE_FILE = "dlq-exports.json"
DlqHandler = Callable[[argparse.Namespace, Settings, Connection], int]


def dlq_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser("dlq", help="the dead-letter queue (see docs/dlq.md)")
    verbs = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = verbs.add_parser("list", help="one line per record; leaves the queue untouched")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--reason", metavar="CODE", help="only records with this failure_reason")
    listing.add_argument("--limit", metavar="N", type=_positive(int), default=1000)
    show = verbs.add_parser("show", help="headers, properties and original body of a record")
    show.add_argument(
        "id", nargs="?", metavar="ID", help="a request_id, notification_id or AMQP message_id"
    )
    show.add_argument(
        "--position", metavar="N", type=_positive(int), help="the record numbered N by list"
    )
    replay = verbs.add_parser("replay", help="republish records to email.queue, then remove")
    replay.add_argument("--reason", metavar="CODE", help="records with this failure_reason")
    replay.add_argument("--request-id", metavar="ID", help="records of this request_id")
    replay.add_argument("--all", action="store_true", help="every record")
    replay.add_argument(
        "--limit", metavar="N", type=_positive(int), help="replay at most N records"
    )
    replay.add_argument(
        "--rate", metavar="PER_S", type=_positive(float), help="at most PER_S publishes a second"
    )
    replay.add_argument("--dry-run", action="store_true", help="print, change nothing")
    export = verbs.add_parser("export", help="write every record to FILE as JSON lines")
    export.add_argument("file", metavar="FILE", type=Path)
    purge = verbs.add_parser("purge", help="remove the exported records (or all with --force)")
    purge.add_argument("--yes", action="store_true", help="confirm: records are removed for good")
    purge.add_argument("--force", action="store_true", help="remove every record, exported or not")
    for parser in (export, purge):
        parser.add_argument(
            "--state-dir", metavar="DIR", type=Path, help="where the last export is recorded"
        )


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def _dlq_refusal(args: argparse.Namespace) -> str | None:
    """Why a dlq command refuses its arguments before touching the broker, or None."""
    if args.dlq_command == "replay":
        if args.all and (args.reason or args.request_id):
            return "--all cannot be combined with --reason or --request-id"
        if not (args.all or args.reason or args.request_id):
            return "choose records with --reason CODE, --request-id ID or --all"
    if args.dlq_command == "show" and (args.id is None) == (args.position is None):
        return "give one ID (request_id, notification_id or message_id) or --position N"
    if args.dlq_command == "purge" and not args.yes:
        return "purge removes records for good; confirm with --yes (export them first)"
    return None


def dlq_command(args: argparse.Namespace, settings: Settings) -> int:
    from email_worker.broker.publisher import PublishError
    from email_worker.dlq.records import DlqError

    command = f"dlq {args.dlq_command}"
    refusal = _dlq_refusal(args)
    if refusal is not None:
        print(f"{command}: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    handlers: dict[str, DlqHandler] = {
        "list": _dlq_list,
        "show": _dlq_show,
        "replay": _dlq_replay,
        "export": _dlq_export,
        "purge": _dlq_purge,
    }
    url = settings.amqp_url.get_secret_value()
    failures: tuple[type[Exception], ...] = (DlqError, PublishError, *BROKER_ERRORS)
    try:
        connection = connector(url, 0, f"email-worker {command}")()
        try:
            return handlers[args.dlq_command](args, settings, connection)
        finally:
            if connection.is_open:
                connection.close()
    except failures as exc:
        print(f"{command}: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED


def _dlq_list(args: argparse.Namespace, settings: Settings, connection: Connection) -> int:
    from email_worker.dlq.records import browse, format_line

    queue = settings.failed_queue
    for record in browse(connection, queue, limit=args.limit, reason=args.reason):
        print(format_line(record, as_json=args.json))
    return 0


def _dlq_show(args: argparse.Namespace, settings: Settings, connection: Connection) -> int:
    from email_worker.dlq.show import find, show_document

    queue = settings.failed_queue
    position = None if args.position is None else int(args.position)
    found = find(connection, queue, key=args.id, position=position)
    if not found:
        what = f"at position {position}" if args.id is None else f"with id {args.id!r}"
        print(f"dlq show: no record {what} in {queue}", file=sys.stderr)
        return EXIT_FAILED
    for match in found:
        print(show_document(match.record, match.matched_by))
    return 0


def _dlq_replay(args: argparse.Namespace, settings: Settings, connection: Connection) -> int:
    from email_worker.broker.publisher import Publisher
    from email_worker.broker.topology import connection_parameters
    from email_worker.dlq.records import DeadLetterRecord, format_line
    from email_worker.dlq.replay import Pacer, Selector, Target, replay

    exchange, key = settings.exchange, settings.routing_keys[0]
    url = settings.amqp_url.get_secret_value()
    publisher = None if args.dry_run else Publisher(connection_parameters(url, 0, "dlq replay"))
    target = None if publisher is None else Target(publisher, exchange, key)
    replayed: list[DeadLetterRecord] = []

    def report(record: DeadLetterRecord) -> None:
        replayed.append(record)
        print(format_line(record, as_json=False), flush=True)

    try:
        replay(
            connection,
            settings.failed_queue,
            target,
            Selector(args.reason, args.request_id),
            limit=args.limit,
            pacer=Pacer(args.rate),
            report=report,
        )
    finally:
        if publisher is not None:
            publisher.close()
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {len(replayed)} record(s) to {exchange!r} with routing key {key!r}")
    return 0


def _dlq_export(args: argparse.Namespace, settings: Settings, connection: Connection) -> int:
    from email_worker.dlq.records import ExportState, export, queue_key

    key = queue_key(settings.amqp_url.get_secret_value(), settings.failed_queue)
    summary = export(connection, settings.failed_queue, args.file, key=key)
    state = ExportState((args.state_dir or settings.dlq_state_dir) / EXPORT_STATE_FILE)
    state.record(summary)
    print(f"exported {summary.records} record(s) to {args.file} (recorded in {state.path})")
    return 0


def _dlq_purge(args: argparse.Namespace, settings: Settings, connection: Connection) -> int:
    from email_worker.dlq.records import ExportState, queue_key
    from email_worker.dlq.replay import NotExported, purge

    queue = settings.failed_queue
    state = ExportState((args.state_dir or settings.dlq_state_dir) / EXPORT_STATE_FILE)
    exported = state.last(queue_key(settings.amqp_url.get_secret_value(), queue))
    try:
        removed = purge(connection, queue, exported, force=args.force)
    except NotExported as exc:
        print(
            f"dlq purge: refused, nothing removed: {exc}. Run `email-worker dlq export FILE` "
            "first, or pass --force to remove every record.",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(f"purged {removed} record(s) from {queue}")
    return 0
