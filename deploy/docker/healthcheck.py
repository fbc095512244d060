"""Container health check for every ``email-worker`` command (Docker ``HEALTHCHECK``).

One image runs four commands, so the check reads PID 1's command line to know which one it is
guarding: ``run`` must answer ``GET /health`` on ``EMAIL_WORKER_HTTP_PORT``; ``callbacks`` must
answer a Celery ``ping`` from a node of this container's host; ``beat`` must reach the broker
(the only thing it needs to schedule anything); one-shot commands (``migrate``, ``dlq``) are
healthy while they run. Exit 0 healthy, 1 unhealthy. Nothing secret is printed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT = 5.0


def command(cmdline: bytes) -> str:
    """The ``email-worker`` subcommand in a NUL-separated command line, or an empty string.
    The bare entrypoint means ``run`` (the image's default CMD)."""
    words = [part.decode(errors="replace") for part in cmdline.split(b"\0") if part]
    for index, word in enumerate(words):
        if word.endswith("email-worker") or word == "email_worker":
            return words[index + 1] if index + 1 < len(words) else "run"
    return ""


def check_run() -> bool:
    port = os.environ.get("EMAIL_WORKER_HTTP_PORT", "8080")
    url = f"http://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return bool(answer.status == 200 and json.load(answer).get("status") == "ok")


def check_callbacks() -> bool:
    from email_worker.callbacks import tasks
    from email_worker.config import Settings

    settings = Settings()
    app = tasks.make_celery(settings.broker_for_celery, settings.callback_queue)
    # Each process names its node callbacks-<pid>@<host> (tasks.node_name): any of this host's
    # nodes answering is this container's worker answering.
    host = f"@{socket.gethostname()}"
    replies = app.control.ping(timeout=TIMEOUT)
    return any(
        name.startswith(tasks.NODE_PREFIX) and name.endswith(host)
        for reply in replies
        for name in reply
    )


def check_beat() -> bool:
    from email_worker.config import Settings

    parts = urlsplit(Settings().broker_for_celery)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=TIMEOUT):
        return True


CHECKS = {"run": check_run, "callbacks": check_callbacks, "beat": check_beat}


def main() -> int:
    try:
        name = command(Path("/proc/1/cmdline").read_bytes())
    except OSError:
        return 0  # not on Linux: nothing to tell which command this is
    check = CHECKS.get(name)
    if check is None:
        return 0
    try:
        healthy = check()
    except Exception as exc:  # any failure to answer is unhealthy; say what kind, not details
        print(f"{name}: unhealthy ({type(exc).__name__})", file=sys.stderr)
        return 1
    if not healthy:
        print(f"{name}: unhealthy", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
