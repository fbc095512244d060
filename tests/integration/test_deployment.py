"""The image's health check (``deploy/docker/healthcheck.py``) against real processes: the
``run`` check against the worker's real health server, the ``callbacks`` check against a real
``email-worker callbacks`` Celery worker on RabbitMQ, the ``beat`` check against the broker."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pika
import pytest

from email_worker.ops.health import HealthServer, Readiness

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cmdline", "command"),
    [
        (b"/usr/local/bin/python\0/usr/local/bin/email-worker\0run\0", "run"),
        (b"/usr/local/bin/python\0/usr/local/bin/email-worker\0", "run"),
        (b"python\0/usr/local/bin/email-worker\0callbacks\0", "callbacks"),
        (b"python3\0-m\0email_worker\0beat\0", "beat"),
        (b"email-worker\0dlq\0list\0", "dlq"),
        (b"/bin/sh\0-c\0sleep 1\0", ""),
    ],
)
def test_check_is_chosen_by_the_command_pid_1_runs(
    healthcheck: ModuleType, cmdline: bytes, command: str
) -> None:
    assert healthcheck.command(cmdline) == command
    assert set(healthcheck.CHECKS) == {"run", "callbacks", "beat"}


def test_run_check_follows_the_health_endpoint(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = HealthServer("127.0.0.1", 0, lambda: Readiness({"broker": False})).start()
    monkeypatch.setenv("EMAIL_WORKER_HTTP_PORT", str(server.port))
    try:
        assert healthcheck.check_run() is True  # alive even while not ready
    finally:
        server.stop()
    with pytest.raises(OSError):
        healthcheck.check_run()


def test_beat_check_needs_the_broker(
    healthcheck: ModuleType, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMAIL_WORKER_CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("EMAIL_WORKER_AMQP_URL", amqp_url)
    assert healthcheck.check_beat() is True
    monkeypatch.setenv("EMAIL_WORKER_AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2F")
    with pytest.raises(OSError):
        healthcheck.check_beat()


@pytest.fixture
def callbacks_process(
    amqp_url: str, database_url: str, unique_prefix: str
) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "EMAIL_WORKER_AMQP_URL": amqp_url,
        "EMAIL_WORKER_DATABASE_URL": database_url,
        "EMAIL_WORKER_CALLBACK_QUEUE": f"{unique_prefix}.callbacks",
        "EMAIL_WORKER_CONCURRENCY": "1",
        "EMAIL_WORKER_HTTP_PORT": "0",
    }
    env.pop("EMAIL_WORKER_CELERY_BROKER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "email_worker", "callbacks"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield env
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            connection.channel().queue_delete(env["EMAIL_WORKER_CALLBACK_QUEUE"])
        finally:
            connection.close()


def test_callbacks_check_pings_this_nodes_celery_worker(
    healthcheck: ModuleType,
    callbacks_process: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EMAIL_WORKER_AMQP_URL", "EMAIL_WORKER_CALLBACK_QUEUE"):
        monkeypatch.setenv(name, callbacks_process[name])
    monkeypatch.setattr(healthcheck, "TIMEOUT", 1.0)
    deadline = time.monotonic() + 30
    while not healthcheck.check_callbacks():
        assert time.monotonic() < deadline, "the callbacks worker never answered a ping"
