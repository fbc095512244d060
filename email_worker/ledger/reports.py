"""Bounce and complaint reports in the ledger (migration ``008_bounce_reports``): tying a
report to the request it is about, and the replay guard of signed webhooks.

``PgReportLedger.tie`` is one call of ``ew_record_report``: under the request's row lock it
moves a sent request to ``bounced`` / ``complained``, appends its event and writes its
``failed`` callback, in one transaction (see the migration for why that callback may follow
``delivered``). ``record`` does the same for all the reports of one webhook POST, and adds
their suppression entries, in one transaction of at most two statements per ``CHUNK``
reports (migration ``012_report_batches``): a POST of thousands of events costs about a dozen
round trips, not thousands of transactions, and is kept whole or not at all.

``claim`` / ``forget`` keep a SHA-256 of each webhook token (or of what a signature covers)
acted on until it could no longer pass its freshness check. Errors:
``DeferredFailure(DATABASE_UNAVAILABLE)`` from ``Database``; ``SchemaBehind`` when migration
008 (or, for ``record``, 012) is missing.

Hazard: ``record`` holds the row locks of every request it ties until it commits. Two POSTs
tying the same requests in opposite orders may deadlock; Postgres then fails one of them
(``DeferredFailure``, 503) and its provider retries it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg2 import errors

from email_worker.ledger.db import Cursor, Database
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ledger.pg_ledger import HANDOVER_GRACE_SECONDS
from email_worker.ledger.statements import json_rows
from email_worker.ledger.suppressions import EntryRow, add_many, entry_row
from email_worker.reports.intake import Intent, Tied
from email_worker.reports.model import Report

RECORD = """
SELECT request_id, recipient, changed, outbox_id
FROM ew_record_report(%(message_ids)s, %(provider_ids)s, %(status)s, %(detail)s, %(error)s,
                      %(webhook_id)s, %(grace)s)
"""
RECORD_MANY = """
SELECT pos, request_id, recipient, changed, outbox_id
FROM ew_record_reports(%(reports)s::jsonb, %(grace)s)
"""
# Reports per statement: bounds one statement's size (a POST may carry thousands).
CHUNK = 500
# Expired keys are dropped on the way (an index range, empty nearly always). A key still
# remembered makes the INSERT do nothing: no row comes back.
CLAIM = """
WITH pruned AS (DELETE FROM webhook_replays WHERE expires_at <= now())
INSERT INTO webhook_replays (provider, key, expires_at)
VALUES (%s, %s, now() + make_interval(secs => %s))
ON CONFLICT (provider, key) DO NOTHING
RETURNING 1
"""
FORGET = "DELETE FROM webhook_replays WHERE provider = %s AND key = %s"



@contextmanager
def _schema_checked(db: Database, *, autocommit: bool) -> Iterator[Cursor]:
    try:
        with db.autocommit() if autocommit else db.transaction() as cur:
            yield cur
    except (errors.UndefinedTable, errors.UndefinedFunction, errors.UndefinedColumn) as exc:
        raise SchemaBehind("bounce reports need `email-worker migrate` (008, 012)") from exc


def _report_params(report: Report, status: str | None, error: str | None) -> dict[str, Any]:
    """``ew_record_report``'s arguments for ``report`` (one element of ``ew_record_reports``)."""
    return {
        "message_ids": list(report.message_ids),
        "provider_ids": list(report.provider_ids),
        "status": status,
        "detail": report.summary or None,
        "error": error,
        # Stable per status event, drawn once: every try of the callback is signed with it.
        "webhook_id": f"msg_{secrets.token_hex(16)}",
    }


def _tied(request_id: Any, recipient: Any, changed: Any, outbox_id: Any) -> Tied:
    return Tied(
        str(request_id), recipient, bool(changed), None if outbox_id is None else int(outbox_id)
    )


def _key(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class PgReportLedger:
    """The ``ReportLedger`` port over Postgres, plus the replay guard. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def tie(self, report: Report, status: str, error: str) -> Tied | None:
        params = _report_params(report, status, error) | {"grace": HANDOVER_GRACE_SECONDS}
        with _schema_checked(self._db, autocommit=False) as cur:
            cur.execute(RECORD, params)
            row = cur.fetchone()
        return None if row is None else _tied(*row)

    def record(self, source: str, intents: Sequence[Intent]) -> list[Tied | None]:
        """The ``BatchLedger`` port: every intent's tie, then its suppression entry, chunk by
        chunk, all in one transaction. Raises ``ValueError`` (nothing kept) for a suppression
        entry that cannot be written (a source or a tied recipient that is not valid)."""
        found: list[Tied | None] = [None] * len(intents)
        with _schema_checked(self._db, autocommit=False) as cur:
            for start in range(0, len(intents), CHUNK):
                chunk = range(start, min(start + CHUNK, len(intents)))
                ties = [
                    {"pos": pos} | _report_params(i.report, i.status, i.error)
                    for pos in chunk
                    if (i := intents[pos]).status
                ]
                if ties:
                    params = {"reports": json_rows(ties), "grace": HANDOVER_GRACE_SECONDS}
                    cur.execute(RECORD_MANY, params)
                    for pos, *row in cur.fetchall():
                        found[pos] = _tied(*row)
                entries: list[EntryRow] = []
                for pos in chunk:
                    intent, address = intents[pos], intents[pos].suppresses(found[pos])
                    if intent.reason is not None and address is not None:
                        detail = intent.report.summary
                        entries.append(entry_row(address, intent.reason, source, detail))
                add_many(cur, entries)
        return found

    def claim(self, provider: str, token: str, seconds: float) -> bool:
        """Remember ``token`` (a webhook's token, or what its signature covers) for
        ``seconds``; False when it is remembered already: a replay. Claimed before the report
        is acted on, so two copies racing each other cannot both act."""
        with _schema_checked(self._db, autocommit=True) as cur:
            cur.execute(CLAIM, (provider, _key(token), seconds))
            return cur.fetchone() is not None

    def forget(self, provider: str, token: str) -> None:
        """Drop a claim whose report could not be acted on, so the provider's retry is
        accepted. Best effort: raises ``DeferredFailure`` when the database is down."""
        with _schema_checked(self._db, autocommit=True) as cur:
            cur.execute(FORGET, (provider, _key(token)))
