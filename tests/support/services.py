"""Real services for integration tests: Postgres and RabbitMQ.

Resolution order for each service: the ``DATABASE_URL`` / ``AMQP_URL`` environment variable when
set, else the service on loopback when it answers, else a testcontainers container (a laptop
with Docker), else skip. Under ``CI=true`` an unreachable service fails the run, never skips.

The same rule for command-line tools a test needs (``require_tool``) and anything else a test
would skip for (``skip_or_fail``): a laptop without the tool skips, CI (``CI=true``) fails,
because CI installs everything the suite uses and a silent skip there hides a lost test.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, NoReturn

import psycopg2
import pytest
from psycopg2 import sql

from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate

LOOPBACK_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOOPBACK_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _answers(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_ci() -> bool:
    """True under ``CI=true`` (GitHub Actions and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> NoReturn:
    """Skip the test on a developer's machine; fail it under ``CI=true``."""
    if on_ci():
        pytest.fail(f"{message} (CI=true: CI must provide it, so this fails instead of skipping)")
    pytest.skip(message)


def require_tool(name: str, *candidates: str) -> str:
    """The path of the command ``name`` (the first of ``candidates`` that is executable, else
    the one on PATH); skips without it, or fails under ``CI=true``."""
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        skip_or_fail(f"{name} is not installed")
    return found


def _unavailable(what: str) -> None:
    skip_or_fail(f"{what} is not reachable (no env URL, nothing on loopback, no Docker)")


def _container(kind: str) -> tuple[str, Any] | None:
    try:
        if kind == "postgres":
            from testcontainers.postgres import PostgresContainer

            pg: Any = PostgresContainer("postgres:15-alpine", driver=None).start()
            return pg.get_connection_url(), pg
        from testcontainers.rabbitmq import RabbitMqContainer

        mq: Any = RabbitMqContainer("rabbitmq:3.13-alpine").start()
        host, port = mq.get_container_host_ip(), mq.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/%2F", mq
    except Exception:  # Docker absent or not running: the caller skips or fails.
        return None


def _resolve(env: str, port: int, loopback: str, kind: str) -> Iterator[str]:
    if os.environ.get(env):
        yield os.environ[env]
        return
    if _answers(port):
        yield loopback
        return
    started = _container(kind)
    if started is None:
        _unavailable(kind)
        return
    url, container = started
    try:
        yield url
    finally:
        container.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    yield from _resolve("DATABASE_URL", 5432, LOOPBACK_PG, "postgres")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    yield from _resolve("AMQP_URL", 5672, LOOPBACK_AMQP, "rabbitmq")


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"ew_test_{uuid.uuid4().hex[:12]}"
    admin_statement(postgres_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(postgres_admin_url, name)
    finally:
        # A fresh connection: a test may have restarted Postgres since the database was made.
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin_statement(postgres_admin_url, drop)


def admin_statement(url: str, statement: str | sql.Composed) -> None:
    """Run one statement (CREATE/DROP DATABASE) on a short-lived autocommit connection."""
    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
    finally:
        admin.close()


@pytest.fixture
def unique_prefix() -> str:
    """A prefix for queue and exchange names so tests never share broker state."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated fresh database behind the worker's own pool (10 connections)."""
    database = Database(database_url, pool_size=10)
    migrate(database)
    try:
        yield database
    finally:
        database.close()
