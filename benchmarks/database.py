"""Postgres for the benchmark: a fresh database per run (created here, migrated by the real
``email-worker migrate``, dropped at the end) and the read-only queries that tell the harness
how far the worker got and when each email was accepted (``sent_at``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from benchmarks.processes import BenchmarkError


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin(admin_url: str, statement: sql.Composable) -> None:
    connection = psycopg2.connect(admin_url, connect_timeout=10)
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with connection.cursor() as cur:
            cur.execute(statement)
    finally:
        connection.close()


def create(admin_url: str, name: str) -> str:
    """Create database ``name``; returns its URL."""
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


def drop(admin_url: str, name: str) -> None:
    """Drop database ``name`` even if connections linger (PostgreSQL 13+ ``FORCE``)."""
    _admin(
        admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def migrate(env: Mapping[str, str], timeout: float = 60) -> None:
    """Run ``email-worker migrate`` with ``env``; raises ``BenchmarkError`` when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "email_worker", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"email-worker migrate failed: {result.stderr.decode()[-2000:]}")


class Ledger:
    """Read-only views of the worker's ledger in one database (one connection, autocommit)."""

    def __init__(self, url: str) -> None:
        self._connection = psycopg2.connect(url, connect_timeout=10)
        self._connection.autocommit = True

    def counts(self) -> dict[str, int]:
        """Rows per status (``sent``, ``failed``, ...)."""
        with self._connection.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM email_requests GROUP BY status")
            return {str(status): int(n) for status, n in cur.fetchall()}

    def sent_at(self) -> dict[str, float]:
        """Epoch seconds of ``sent_at`` per sent request id."""
        return self.epochs(
            "SELECT request_id, extract(epoch FROM sent_at)::float8 FROM email_requests"
            " WHERE status = 'sent'"
        )

    def epochs(self, query: str) -> dict[str, float]:
        """``{key: epoch seconds}`` from a query selecting (text, float8) rows."""
        with self._connection.cursor() as cur:
            cur.execute(query)
            return {str(key): float(at) for key, at in cur.fetchall()}

    def scalar(self, query: str) -> int:
        with self._connection.cursor() as cur:
            cur.execute(query)
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        self._connection.close()
