"""The suppression list in Postgres (migration ``007_suppressions``): ``SuppressionStore``,
the API every intake calls (the relay's 5.1.x refusals, provider webhooks, the CLI, one-click
unsubscribe), and ``PgSuppressions``, the pipeline's ``Suppressions`` port over it.

Hot path: the port's ``check`` is a primary-key probe in autocommit (no BEGIN/COMMIT round
trips), the checks of concurrent messages sharing one statement (``group_commit.py``), and no
cache, so an entry added by any process stops the very next message to that address.
Expired entries count as absent everywhere and are deleted by ``prune_expired``.

Many entries at once (``add_many``, migration ``012_report_batches``): the entries of one
webhook POST, written inside the caller's transaction in one statement per chunk, each with
exactly the effect ``add`` gives it, in their order.

Errors: ``DeferredFailure(DATABASE_UNAVAILABLE)`` when Postgres cannot be reached (from
``Database``), ``SchemaBehind`` when migration 007 was not applied, ``ValueError`` for an
address that is not one ``local@domain`` or an unknown reason or source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import errors

from email_worker.ledger.db import Cursor, Database
from email_worker.ledger.group_commit import GroupCommit
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ledger.statements import json_rows
from email_worker.suppression.entries import (
    MAX_DETAIL,
    Entry,
    SuppressionReason,
    address_key,
    check_source,
    mask,
    normalise,
)
from schemas.failures import WorkerFailure

log = logging.getLogger(__name__)

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_CHECK = f"SELECT reason FROM suppressions WHERE address_hash = %s AND {_LIVE}"
_CHECK_MANY = (
    f"SELECT address_hash, reason FROM suppressions WHERE address_hash = ANY(%s) AND {_LIVE}"
)
# Checks that concurrent threads make at the same moment share one statement (at most this
# many addresses in one), as the ledger's claims do.
MAX_BATCH = 64
_ENTRY = "address, reason, source, detail, first_seen, last_seen, expires_at"
_GET = f"SELECT {_ENTRY} FROM suppressions WHERE address_hash = %s AND {_LIVE}"
_LIST = (
    f"SELECT {_ENTRY} FROM suppressions WHERE {_LIVE}"
    " ORDER BY last_seen DESC, address_hash LIMIT %s OFFSET %s"
)
_ADD = "SELECT ew_suppression_add(%s, %s, %s, %s, %s, %s)"
_ADD_MANY = "SELECT ew_suppression_add_many(%s::jsonb)"
_REMOVE = "DELETE FROM suppressions WHERE address_hash = %s"
_PRUNE = "DELETE FROM suppressions WHERE expires_at <= now()"
_COUNT = f"SELECT count(*) FROM suppressions WHERE {_LIVE}"
# The status and enhanced code that open an SMTP reply: all of it we keep (the relay's text
# may quote the address).
_SMTP_CODE = re.compile(r"\s*(\d{3}(?:[ -]\d\.\d{1,3}\.\d{1,3})?)")


@contextmanager
def _schema_checked(db: Database) -> Iterator[Cursor]:
    try:
        with db.autocommit() as cur:
            yield cur
    except (errors.UndefinedTable, errors.UndefinedFunction) as exc:
        raise SchemaBehind(
            "the suppression list is missing: run `email-worker migrate` first"
        ) from exc


def _entry(row: tuple[Any, ...]) -> Entry:
    address, reason, source, detail, first_seen, last_seen, expires_at = row
    return Entry(
        address, SuppressionReason(reason), source, detail, first_seen, last_seen, expires_at
    )


class SuppressionStore:
    """Reads and writes the list; thread-safe (each call takes a pooled connection)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        address: str,
        reason: SuppressionReason | str,
        source: str,
        detail: str = "",
        expires_at: datetime | None = None,
    ) -> None:
        """Add ``address`` or refresh its entry: ``last_seen`` moves; a stronger reason
        (complaint > hard_bounce > manual > unsubscribe) replaces a weaker one, never the
        reverse; an expired entry is replaced as if new. ``detail`` is cut to 200 characters
        and must hold no address; ``expires_at`` must be timezone-aware (None: never)."""
        checked = entry_row(address, reason, source, detail)
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must carry a timezone")
        row = (*checked, expires_at)
        with _schema_checked(self._db) as cur:
            cur.execute(_ADD, row)

    def remove(self, address: str) -> bool:
        """Delete the entry of ``address``; False when there was none."""
        with _schema_checked(self._db) as cur:
            cur.execute(_REMOVE, (address_key(normalise(address)),))
            return cur.rowcount > 0

    def check(self, address: str) -> Entry | None:
        """The live (unexpired) entry of ``address``, or None."""
        with _schema_checked(self._db) as cur:
            cur.execute(_GET, (address_key(normalise(address)),))
            row = cur.fetchone()
        return None if row is None else _entry(row)

    def reason(self, address: str) -> SuppressionReason | None:
        """Only the reason of the live entry: the pipeline's one-column probe."""
        with _schema_checked(self._db) as cur:
            cur.execute(_CHECK, (address_key(normalise(address)),))
            row = cur.fetchone()
        return None if row is None else SuppressionReason(row[0])

    def reasons(self, addresses: Sequence[str]) -> list[SuppressionReason | None]:
        """``reason`` for many addresses in one statement, in their order."""
        keys = [address_key(normalise(address)) for address in addresses]
        with _schema_checked(self._db) as cur:
            cur.execute(_CHECK_MANY, ([psycopg2.Binary(key) for key in keys],))
            found = {bytes(key): SuppressionReason(reason) for key, reason in cur.fetchall()}
        return [found.get(key) for key in keys]

    def list(self, limit: int = 100, offset: int = 0, masked: bool = True) -> list[Entry]:
        """Live entries, the most recently seen first; addresses masked
        (``j***@example.com``) unless ``masked`` is False."""
        with _schema_checked(self._db) as cur:
            cur.execute(_LIST, (max(0, limit), max(0, offset)))
            entries = [_entry(row) for row in cur.fetchall()]
        if not masked:
            return entries
        return [_masked(entry, mask(entry.address)) for entry in entries]

    def count(self) -> int:
        """How many live entries the list holds."""
        with _schema_checked(self._db) as cur:
            cur.execute(_COUNT)
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def prune_expired(self) -> int:
        """Delete expired entries; returns how many."""
        with _schema_checked(self._db) as cur:
            cur.execute(_PRUNE)
            return cur.rowcount


EntryRow = tuple[bytes, str, str, str, str]  # (key, address, reason, source, detail)


def entry_row(
    address: str, reason: SuppressionReason | str, source: str, detail: str = ""
) -> EntryRow:
    """What ``add`` writes for ``address``, checked: ``ValueError`` for what is not one
    address, an unknown reason or a bad source."""
    normalised = normalise(address)
    kind = SuppressionReason(reason)
    return (
        address_key(normalised),
        normalised,
        kind.value,
        check_source(source),
        detail[:MAX_DETAIL],
    )


def add_many(cur: Cursor, rows: Sequence[EntryRow]) -> None:
    """Write ``rows`` (from ``entry_row``; never expiring) in one statement on ``cur``, ending
    as ``add`` of each in their order would (migration 012 folds the rows of one address
    first). Inside the caller's transaction: they commit or roll back with what else it
    writes."""
    if not rows:
        return
    keys = ("hash", "address", "reason", "source", "detail")
    entries = [
        {"pos": pos, **dict(zip(keys, (row[0].hex(), *row[1:]), strict=True))}
        for pos, row in enumerate(rows)
    ]
    cur.execute(_ADD_MANY, (json_rows(entries),))


def _masked(entry: Entry, address: str) -> Entry:
    return Entry(
        address,
        entry.reason,
        entry.source,
        entry.detail,
        entry.first_seen,
        entry.last_seen,
        entry.expires_at,
    )


def smtp_detail(reply: str) -> str:
    """The status and enhanced code of an SMTP reply (``550 5.1.1``), without its text."""
    found = _SMTP_CODE.match(reply)
    return found.group(1) if found else ""


class PgSuppressions:
    """The pipeline's ``Suppressions`` port over a ``SuppressionStore``. Concurrent checks
    share one statement (``group_commit.py``: a lone check runs at once, alone). With
    ``hard_bounces=False`` (``SUPPRESS_HARD_BOUNCES=false``) the relay's refusals add
    nothing; the list is still checked."""

    def __init__(self, store: SuppressionStore, *, hard_bounces: bool = True) -> None:
        self._store = store
        self._hard_bounces = hard_bounces
        self._checks: GroupCommit[str, SuppressionReason | None] = GroupCommit(
            store.reasons, max_batch=MAX_BATCH
        )

    def check(self, address: str) -> str | None:
        """The reason, or None. Raises ``DeferredFailure`` when the list cannot be read,
        ``ValueError`` for what is not one address."""
        normalise(address)  # a bad address fails its own check, not its batch
        reason = self._checks.submit(address)
        return None if reason is None else reason.value

    def hard_bounce(self, address: str, detail: str) -> None:
        """Add ``address`` (``hard_bounce``, source ``smtp``); never raises."""
        if not self._hard_bounces:
            return
        try:
            self._store.add(address, SuppressionReason.HARD_BOUNCE, "smtp", smtp_detail(detail))
        except (WorkerFailure, SchemaBehind, ValueError) as exc:
            # Best effort: the next refusal of this address tries again.
            log.warning(
                "could not add a hard bounce to the suppression list",
                extra={"error": type(exc).__name__},
            )
