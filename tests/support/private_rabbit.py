"""A private RabbitMQ node for tests that restart the broker.

The shared broker on 127.0.0.1:5672 serves every other test running at the same time, so a test
that stops or restarts a broker starts its own node on this machine: its own node name
(``ewtest-<pid>-<n>@localhost``), AMQP and distribution ports, data and log directories and
Erlang cookie, all in a temporary directory that is removed with the node. Its own (empty)
``rabbitmq-env.conf`` and ``rabbitmq.conf`` keep the machine's files (which name the shared
node and its port) out of it, and its own cookie means no ``rabbitmqctl`` call made here can
reach the shared node. Both the server and ``rabbitmqctl`` read the cookie from the node's HOME.

One node per test module (``private_rabbit``, module scope: it takes seconds to boot) and a
``Stack`` on it per test (``private_stack``). Without ``rabbitmq-server`` the tests skip, or
fail under ``CI=true``; a node that is installed but does not boot fails the test either way.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from email_worker.app import declare_topology
from tests.support.http import FakeHttpServer
from tests.support.services import skip_or_fail
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack

log = logging.getLogger(__name__)

# Debian and Ubuntu put the real scripts here; /usr/sbin holds wrappers that switch to the
# rabbitmq user (whose files our temporary directory is not).
PACKAGED = Path("/usr/lib/rabbitmq/bin")
BOOT_SECONDS = 90.0
CTL_SECONDS = 90.0
_names = itertools.count(1)


class PrivateRabbitError(RuntimeError):
    """The private node did not start or did not obey; the message ends with its log."""


def find_scripts() -> tuple[Path, Path] | None:
    """``(rabbitmq-server, rabbitmqctl)``, or None when RabbitMQ is not installed."""
    for folder in (PACKAGED, *(Path(p) for p in os.environ.get("PATH", "").split(os.pathsep))):
        server, ctl = folder / "rabbitmq-server", folder / "rabbitmqctl"
        if server.is_file() and ctl.is_file() and os.access(server, os.X_OK):
            return server, ctl
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRabbit:
    """One RabbitMQ node in ``base``; ``start()``, ``stop_app()``/``start_app()``, ``remove()``."""

    def __init__(self, server: Path, ctl: Path, base: Path) -> None:
        self.server, self.ctl_script, self.base = server, ctl, base
        self.node = f"ewtest-{os.getpid()}-{next(_names)}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.started_in = 0.0  # seconds the first boot took
        self._process: subprocess.Popen[bytes] | None = None
        self._write_files()

    def _write_files(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (self.base / "enabled_plugins").write_text("[].\n")  # no plugins at all
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )

    def environment(self) -> dict[str, str]:
        """The environment of the server and of ``rabbitmqctl``: nothing of the machine's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        base = self.base
        return env | {
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),  # absent: none
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The distribution port on loopback only, as the machine's own node does.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        """Boot the node and wait until it serves AMQP; ``PrivateRabbitError`` otherwise."""
        began = time.monotonic()
        out = (self.base / "server.out").open("ab")
        try:
            self._process = subprocess.Popen(
                [str(self.server)],
                env=self.environment(),
                cwd=self.base,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: removed as one, by its id
            )
        finally:
            out.close()
        self._wait_for_amqp(began + BOOT_SECONDS)
        self.ctl("await_startup")
        self.started_in = time.monotonic() - began
        log.info("private RabbitMQ node up", extra={"node": self.node, "s": self.started_in})

    def _wait_for_amqp(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while time.monotonic() < deadline:
            if _answers(self.port):
                return
            with suppress(subprocess.TimeoutExpired):  # the pause; returns early if it died
                process.wait(0.2)
                died = f"{self.node} exited with {process.returncode}"
                raise PrivateRabbitError(died + self.tail())
        raise PrivateRabbitError(f"{self.node} did not boot in {BOOT_SECONDS}s{self.tail()}")

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n <node> args``; its output, or ``PrivateRabbitError``."""
        command = [str(self.ctl_script), "-n", self.node, *args]
        try:
            done = subprocess.run(
                command,
                check=False,
                env=self.environment(),
                capture_output=True,
                timeout=CTL_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivateRabbitError(f"rabbitmqctl {' '.join(args)} timed out") from exc
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise PrivateRabbitError(f"rabbitmqctl {' '.join(args)} failed: {said}")
        return done.stdout.decode(errors="replace")

    def stop_app(self) -> None:
        """Stop RabbitMQ on the node (connections close; the Erlang VM stays up)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Start RabbitMQ again and wait until it has recovered its queues."""
        self.ctl("start_app")
        self.ctl("await_startup")

    def remove(self) -> None:
        """Shut the node down (killing its process group if it will not go) and delete its
        directory."""
        process = self._process
        if process is not None and process.poll() is None:
            with suppress(PrivateRabbitError):
                self.ctl("shutdown")
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)

    def tail(self) -> str:
        """The end of the node's console output, for error messages."""
        with suppress(OSError):
            text = (self.base / "server.out").read_text(errors="replace")
            return "\n--- node output ---\n" + text[-3000:]
        return ""


def _answers(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# pytest fixtures, defined under ``name=`` so that a test module can import them without its
# parameters shadowing the import (ruff F811).


@pytest.fixture(name="private_rabbit", scope="module")
def private_rabbit_fixture() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this test module's own, free to be stopped and restarted."""
    scripts = find_scripts()
    if scripts is None:
        skip_or_fail("rabbitmq-server is not installed (the broker-restart tests need it)")
    node = PrivateRabbit(*scripts, Path(tempfile.mkdtemp(prefix="ewtest-rabbit-")))
    try:
        node.start()
    except PrivateRabbitError as exc:
        node.remove()
        pytest.fail(f"the private RabbitMQ node did not start: {exc}")
    try:
        yield node
    finally:
        node.remove()


@pytest.fixture(name="private_stack")
def private_stack_fixture(
    database_url: str,
    private_rabbit: PrivateRabbit,
    unique_prefix: str,
    smtp_server: SmtpTestServer,
    http_server: FakeHttpServer,
) -> Iterator[Stack]:
    """``stack`` (tests/support/stack.py) on the module's private node."""
    from email_worker.ledger.db import Database
    from email_worker.ledger.migrations import migrate

    db = Database(database_url, pool_size=1)
    migrate(db)
    db.close()
    built = Stack(database_url, private_rabbit.amqp_url, unique_prefix, smtp_server, http_server)
    declare_topology(built.settings())
    try:
        yield built
    finally:
        built.cleanup()
