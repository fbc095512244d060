"""A private PostgreSQL server for tests that restart the database.

The shared server on 127.0.0.1:5432 serves every other test running at the same time (and on a
developer's machine, whatever else uses it), so a test that restarts Postgres starts a server of
its own: ``initdb`` into a temporary directory, ``pg_ctl`` on a free loopback port with its
Unix socket in that directory, trust authentication for the ``postgres`` role. The test starts,
restarts and removes exactly that server, whatever ``DATABASE_URL`` points at.

``initdb`` refuses to run as root, so as root every server command runs as the ``postgres``
user (which owns the directory). The binaries come from ``pg_config --bindir`` or Debian's
``/usr/lib/postgresql/<version>/bin`` (the newest), else PATH. Without them the tests skip, or
fail under ``CI=true`` (``tests.support.services.skip_or_fail``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql

from email_worker.app import declare_topology
from tests.support.http import FakeHttpServer
from tests.support.services import admin_statement, free_loopback_port, skip_or_fail
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack

COMMAND_SECONDS = 120


class PrivatePostgresError(RuntimeError):
    """A server command failed; the message ends with the server's log."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.insert(0, Path(done.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    return None


class PrivatePostgres:
    """One server in ``base``: ``start()``, ``restart()``, ``remove()``; ``url`` is its
    ``postgres`` database."""

    def __init__(self, bindir: Path, base: Path) -> None:
        self.bindir, self.base = bindir, base
        self.data, self.log = base / "data", base / "server.log"
        self.port = free_loopback_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb refuses root: the directory and the server are postgres's
            owner = pwd.getpwnam("postgres")
            os.chown(base, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.base,
                capture_output=True,
                timeout=COMMAND_SECONDS,
                check=False,
                **self._as,
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivatePostgresError(f"{tool} {' '.join(args)} timed out{self.tail()}") from exc
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise PrivatePostgresError(f"{tool} {' '.join(args)} failed: {said}{self.tail()}")

    def start(self) -> None:
        """``initdb`` (trust, ``postgres`` superuser) and start; waits until it accepts
        connections."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *args: str) -> None:
        # Loopback only, a free port, the socket in our directory (never /var/run/postgresql),
        # no fsync: a clean (fast) restart loses nothing, and the files die with the test.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            f" -c unix_socket_directories={self.base}"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(COMMAND_SECONDS), *args, action)  # fmt: skip

    def restart(self) -> None:
        """A fast restart (``pg_ctl -m fast restart``): every session is cut off at once, then
        the server accepts connections again before this returns."""
        self._pg_ctl("restart", "-m", "fast")

    def remove(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            with suppress(PrivatePostgresError):  # already gone: the directory goes anyway
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def tail(self) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n--- server log ---\n" + self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# pytest fixtures, defined under ``name=`` so that a test module can import them without its
# parameters shadowing the import (ruff F811).


@pytest.fixture(name="private_postgres", scope="module")
def private_postgres_fixture() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test module's own, free to be restarted."""
    bindir = find_bindir()
    if bindir is None:
        skip_or_fail("PostgreSQL's initdb and pg_ctl are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root, and there is no postgres user to run initdb as")
    server = PrivatePostgres(bindir, Path(tempfile.mkdtemp(prefix="ewtest-pg-")))
    try:
        server.start()
    except PrivatePostgresError as exc:
        server.remove()
        pytest.fail(f"the private PostgreSQL server did not start: {exc}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(name="private_pg_stack")
def private_pg_stack_fixture(
    private_postgres: PrivatePostgres,
    amqp_url: str,
    unique_prefix: str,
    smtp_server: SmtpTestServer,
    http_server: FakeHttpServer,
) -> Iterator[Stack]:
    """``stack`` (tests/support/stack.py) with a fresh database on the module's private
    server (the broker is the shared one, under the test's unique prefix)."""
    from email_worker.ledger.db import Database
    from email_worker.ledger.migrations import migrate

    name = f"ew_test_{unique_prefix}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    admin_statement(private_postgres.url, create)
    database_url = private_postgres.url.rpartition("/")[0] + f"/{name}"
    db = Database(database_url, pool_size=1)
    migrate(db)
    db.close()
    built = Stack(database_url, amqp_url, unique_prefix, smtp_server, http_server)
    declare_topology(built.settings())
    try:
        yield built
    finally:
        built.cleanup()
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        admin_statement(private_postgres.url, drop)
