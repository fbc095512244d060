"""``email-worker suppression list|add|remove|check`` (CONTRACT section 15; docs/suppression.md).

- ``list [--limit N] [--offset N] [--show-addresses] [--json]``: live entries, the most recently
  seen first, addresses masked (``j***@example.com``) unless ``--show-addresses``.
- ``add ADDRESS [--reason R] [--expires WHEN] [--detail TEXT]``: reason ``manual`` by default;
  ``WHEN`` is a duration (``30d``, ``12h``, ``90m``) or an RFC 3339 time with an offset. A
  stronger reason already on the list is kept (complaint > hard_bounce > manual > unsubscribe).
- ``remove ADDRESS``: exit 1 when the address was not on the list.
- ``check ADDRESS [--json]``: exit 0 and the reason when suppressed, exit 1 when not;
  ``--json`` prints exactly ``{"suppressed": true|false, "reason": ...}`` (``list --json``
  has the source, detail and dates).

Exit 2 for an address or ``--expires`` that cannot be read, 5 when the database cannot be
reached (so a script never takes an outage for "not suppressed"). Nothing is logged: an
address given here appears only in what ``list --show-addresses`` prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from email_worker.config import Settings
from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore
from email_worker.suppression.entries import Entry, SuppressionReason, normalise
from schemas.failures import WorkerFailure

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 5
_DURATION = re.compile(r"(\d{1,6})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
Verb = Callable[[argparse.Namespace, SuppressionStore], int]


def suppression_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("suppression", help="the suppression list (docs/suppression.md)")
    verbs = parser.add_subparsers(dest="suppression_command", required=True)
    listing = verbs.add_parser("list", help="live entries, newest first, addresses masked")
    listing.add_argument("--limit", type=int, default=100, metavar="N")
    listing.add_argument("--offset", type=int, default=0, metavar="N")
    listing.add_argument("--show-addresses", action="store_true", help="do not mask addresses")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    add = verbs.add_parser("add", help="suppress an address")
    add.add_argument("address", metavar="ADDRESS")
    add.add_argument("--reason", choices=[r.value for r in SuppressionReason], default="manual")
    add.add_argument("--expires", metavar="WHEN", help="30d, 12h, 90m or an RFC 3339 time")
    add.add_argument("--detail", default="", help="a short note (no personal data)")
    remove = verbs.add_parser("remove", help="take an address off the list")
    remove.add_argument("address", metavar="ADDRESS")
    check = verbs.add_parser("check", help="exit 0 and print the reason when suppressed")
    check.add_argument("address", metavar="ADDRESS")
    check.add_argument("--json", action="store_true")


def parse_expiry(text: str, now: datetime) -> datetime:
    """``30d`` / ``12h`` / ``90m`` from ``now``, or an RFC 3339 time with an offset; raises
    ``ValueError`` for anything else (a time without an offset included)."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        return now + timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("a time needs an offset (Z or +hh:mm)")
    return when


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "address": entry.address,
        "reason": entry.reason.value,
        "source": entry.source,
        "detail": entry.detail,
        "first_seen": _time(entry.first_seen),
        "last_seen": _time(entry.last_seen),
        "expires_at": _time(entry.expires_at),
    }


def _list(args: argparse.Namespace, store: SuppressionStore) -> int:
    entries = store.list(args.limit, args.offset, masked=not args.show_addresses)
    for entry in entries:
        if args.json:
            print(json.dumps(entry_json(entry)))
        else:
            expires = _time(entry.expires_at) or "never"
            print(
                f"{entry.address}  {entry.reason}  {entry.source}  "
                f"last_seen={_time(entry.last_seen)}  expires={expires}  {entry.detail}".rstrip()
            )
    return 0


def _add(args: argparse.Namespace, store: SuppressionStore) -> int:
    expires = None if args.expires is None else parse_expiry(args.expires, datetime.now(UTC))
    store.add(args.address, args.reason, "cli", args.detail, expires)
    entry = store.check(args.address)
    if entry is None:  # expires in the past
        print("not suppressed: the expiry has already passed")
    elif entry.reason != args.reason:
        print(f"already suppressed: {entry.reason} (a stronger reason is kept)")
    else:
        print(f"suppressed: {entry.reason}, expires {_time(entry.expires_at) or 'never'}")
    return 0


def _remove(args: argparse.Namespace, store: SuppressionStore) -> int:
    if store.remove(args.address):
        print("removed")
        return 0
    print("not on the list")
    return EXIT_NOT_FOUND


def _check(args: argparse.Namespace, store: SuppressionStore) -> int:
    entry = store.check(args.address)
    if args.json:  # exactly the contract's object: scripts compare it whole
        print(json.dumps({"suppressed": entry is not None, "reason": entry and entry.reason.value}))
    else:
        print(entry.reason if entry else "not suppressed")
    return 0 if entry else EXIT_NOT_FOUND


VERBS: dict[str, Verb] = {"list": _list, "add": _add, "remove": _remove, "check": _check}


def suppression_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one verb on its own one-connection pool. ``SchemaBehind`` passes up (exit 4)."""
    address = getattr(args, "address", None)
    try:
        if address is not None:
            normalise(address)  # refuse it before connecting
        if getattr(args, "expires", None) is not None:
            parse_expiry(args.expires, datetime.now(UTC))
    except ValueError as exc:
        print(f"email-worker suppression: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    try:
        return VERBS[args.suppression_command](args, SuppressionStore(db))
    except WorkerFailure as exc:
        print(f"email-worker suppression: the database is unreachable ({exc})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        db.close()
