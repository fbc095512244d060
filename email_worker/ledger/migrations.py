"""Schema migrations: the numbered SQL files in ``email_worker/ledger/sql`` applied in order,
once each.

``migrate`` is what ``email-worker migrate`` runs. Many replicas may run it at the same time
(an init container per pod): a transaction-scoped advisory lock serialises them, and the
``schema_migrations`` table records what was applied, so running it again changes nothing.
It also creates the worker's own secrets (the Message-ID key) when they are absent.
"""

from __future__ import annotations

import secrets
from importlib import resources

from psycopg2.extensions import cursor

from email_worker.ledger.db import Database

# An arbitrary, fixed advisory-lock key: "email-worker migrate" and nothing else takes it.
LOCK_KEY = 0x656D_6169_6C77_6B72 & 0x7FFF_FFFF_FFFF_FFFF
MESSAGE_ID_KEY_NAME = "message_id_secret"
SECRET_BYTES = 32

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def available() -> list[tuple[str, str]]:
    """The shipped migrations as ``(version, sql)`` sorted by version (``001_init``, ...)."""
    folder = resources.files("email_worker.ledger").joinpath("sql")
    found = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


def migrate(db: Database) -> list[str]:
    """Apply every migration not applied yet, all in one transaction, and make sure the
    Message-ID secret exists. Returns the versions applied by this call ([] when up to date).
    Safe to run concurrently from many processes. Raises ``DeferredFailure`` when the database
    is unreachable; a failing migration rolls everything back and raises psycopg2's error."""
    applied: list[str] = []
    with db.transaction() as cur:
        # The lock comes first: even CREATE TABLE IF NOT EXISTS races with itself.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur.execute(_CREATE_VERSIONS)
        done = _applied(cur)
        for version, sql in available():
            if version in done:
                continue
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    get_or_create_secret(db, MESSAGE_ID_KEY_NAME)
    return applied


class SchemaBehind(Exception):
    """The database lacks migrations this version needs (``email-worker migrate`` not run)."""


def check_applied(db: Database) -> None:
    """Raise ``SchemaBehind`` naming every shipped migration the database has not applied;
    ``DeferredFailure`` when the database is unreachable."""
    with db.transaction() as cur:
        done = _applied(cur)
    missing = [version for version, _ in available() if version not in done]
    if missing:
        raise SchemaBehind(
            f"the database schema lacks {', '.join(missing)}: run `email-worker migrate` first"
        )


def _applied(cur: cursor) -> set[str]:
    """The versions ``schema_migrations`` records; none before the table exists."""
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = cur.fetchone()
    if row is None or not row[0]:
        return set()
    cur.execute("SELECT version FROM schema_migrations")
    return {version for (version,) in cur.fetchall()}


def get_or_create_secret(db: Database, name: str) -> bytes:
    """The secret called ``name``: 32 random bytes created on first use and stable forever
    after, the same for every replica (a concurrent creator loses the race harmlessly)."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO worker_secrets (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (name, secrets.token_bytes(SECRET_BYTES)),
        )
        cur.execute("SELECT value FROM worker_secrets WHERE name = %s", (name,))
        row = cur.fetchone()
    if row is None:  # pragma: no cover - the insert above guarantees a row
        raise LookupError(f"secret {name!r} could not be created")
    return bytes(row[0])
