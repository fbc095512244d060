"""The machine a result came from: cores, CPU model, RAM, load, and the versions of Python,
RabbitMQ, PostgreSQL, the sink and the libraries that matter. Best effort: a figure that cannot
be read is reported as ``unknown``, never fails the run."""

from __future__ import annotations

import os
import platform
import subprocess
from contextlib import suppress
from importlib import metadata
from pathlib import Path

import pika
import psycopg2

LIBRARIES = ("pika", "celery", "kombu", "psycopg2-binary", "jinja2", "httpx", "pydantic")


def cpu_model(cpuinfo: str) -> str:
    """The ``model name`` of the first CPU in ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def mem_total_gib(meminfo: str) -> float:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1048576
    return 0.0


def _read(path: str) -> str:
    with suppress(OSError):
        return Path(path).read_text()
    return ""


def _rabbitmq_version(amqp_url: str) -> str:
    with suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            properties = connection._impl.server_properties  # no public accessor in pika
            version = properties.get("version", "unknown")
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            connection.close()
    return "unknown"


def _postgres_version(database_url: str) -> str:
    with suppress(Exception):
        connection = psycopg2.connect(database_url, connect_timeout=5)
        try:
            with connection.cursor() as cur:
                cur.execute("SHOW server_version")
                row = cur.fetchone()
                return str(row[0]) if row else "unknown"
        finally:
            connection.close()
    return "unknown"


def _command(argv: list[str]) -> str:
    with suppress(Exception):
        result = subprocess.run(argv, capture_output=True, timeout=10, check=False, text=True)
        return result.stdout.strip() or "unknown"
    return "unknown"


def describe(amqp_url: str, database_url: str, sink_kind: str) -> dict[str, str]:
    """A flat, printable description of this machine and software."""
    versions = {}
    for name in LIBRARIES:
        with suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    load = os.getloadavg()
    sink = sink_kind
    if sink_kind == "smtp-sink":
        sink += " (Postfix " + _command(["postconf", "-dh", "mail_version"]) + ")"
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu_model(_read("/proc/cpuinfo")),
        "RAM": f"{mem_total_gib(_read('/proc/meminfo')):.1f} GiB",
        "load average at start": ", ".join(f"{v:.2f}" for v in load),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "RabbitMQ": _rabbitmq_version(amqp_url),
        "PostgreSQL": _postgres_version(database_url),
        "SMTP sink": sink,
        "libraries": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": _command(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]
        ),
    }
