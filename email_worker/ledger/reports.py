"""Bounce and complaint reports in the ledger (migration ``008_bounce_reports``): tying a
report to the request it is about, and the replay guard of signed webhooks.

``PgReportLedger.tie`` is one call of ``ew_record_report``: under the request's row lock it
moves a sent request to ``bounced`` / ``complained``, appends its event and writes its
``failed`` callback, in one transaction (see the migration for why that callback may follow
``delivered``). ``claim`` / ``forget`` keep a SHA-256 of each webhook token (or of what a
signature covers) acted on until it could no longer pass its freshness check. Errors:
``DeferredFailure(DATABASE_UNAVAILABLE)`` from ``Database``; ``SchemaBehind`` when migration
008 is missing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg2 import errors

from email_worker.ledger.db import Cursor, Database
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ledger.pg_ledger import HANDOVER_GRACE_SECONDS
from email_worker.reports.intake import Tied
from email_worker.reports.model import Report

RECORD = """
SELECT request_id, recipient, changed, outbox_id
FROM ew_record_report(%(message_ids)s, %(provider_ids)s, %(status)s, %(detail)s, %(error)s,
                      %(webhook_id)s, %(grace)s)
"""
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
        raise SchemaBehind("bounce reports need `email-worker migrate` (008)") from exc


def _key(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class PgReportLedger:
    """The ``ReportLedger`` port over Postgres, plus the replay guard. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def tie(self, report: Report, status: str, error: str) -> Tied | None:
        params = {
            "message_ids": list(report.message_ids),
            "provider_ids": list(report.provider_ids),
            "status": status,
            "detail": report.summary or None,
            "error": error,
            # Stable per status event, drawn once: every try of the callback is signed with it.
            "webhook_id": f"msg_{secrets.token_hex(16)}",
            "grace": HANDOVER_GRACE_SECONDS,
        }
        with _schema_checked(self._db, autocommit=False) as cur:
            cur.execute(RECORD, params)
            row = cur.fetchone()
        if row is None:
            return None
        request_id, recipient, changed, outbox_id = row
        return Tied(
            str(request_id),
            recipient,
            bool(changed),
            None if outbox_id is None else int(outbox_id),
        )

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
