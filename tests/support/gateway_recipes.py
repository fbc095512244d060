"""The recipes of docs/gateways.md as the gateway tests run them, and the real-shaped
services the gateways come with (issue 13, CONTRACT sections 5 and 6).

``documented`` reads a settings block of the page (``<!-- gateway-settings: NAME -->`` and the
fenced block after it) the way a shell would; ``environment`` points its hosts at the test's
HTTP server and adds the test's plumbing (unique names, local servers, short delays), nothing
that makes the worker fit a gateway. ``serve_templates`` and ``serve_users`` play a template
service and a user service with other paths, other answer shapes and credentials they check.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from email_worker.app import Worker
from email_worker.app.build import inline_notifier
from email_worker.config import PREFIX, Settings
from tests.support.http import FakeHttpServer, Reply, Seen
from tests.support.stack import Stack, wait_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateways.md"
# The queue each style declares when nobody configured it otherwise (its recipe's main block).
NATURAL = {"spec_pika": "plain", "aio_pika": "arguments", "nestjs": "plain", "django": "plain"}
# Test plumbing only: names unique to the test, local servers, short delays. Everything that
# makes the worker fit a gateway comes from docs/gateways.md.
PLUMBING = (  # noqa: SIM905 - one word per setting reads better than 17 lines
    "AMQP_URL DATABASE_URL EXCHANGE EMAIL_QUEUE FAILED_QUEUE RETRY_QUEUE_PREFIX CALLBACK_QUEUE"
    " RETRY_DELAYS MAX_ATTEMPTS SMTP_HOST SMTP_PORT SMTP_TIMEOUT HTTP_PORT BREAKER_FAIL_MAX"
    " BREAKER_RESET_SECONDS LEASE_SECONDS DRAIN_SECONDS"
).split()
HOST = re.compile(r"^https?://[A-Za-z0-9.-]+:\d+")


def documented(block: str) -> dict[str, str]:
    """The ``EMAIL_WORKER_*`` lines of the fenced block after ``<!-- gateway-settings: block
    -->`` in docs/gateways.md, parsed the way a shell would."""
    text = DOCS.read_text(encoding="utf-8")
    marker = f"<!-- gateway-settings: {block} -->"
    assert marker in text, f"docs/gateways.md has no settings block {block!r}"
    fenced = text.split(marker, 1)[1].split("```", 2)[1]
    settings: dict[str, str] = {}
    for line in fenced.splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            (assignment,) = shlex.split(line)
            name, _, value = assignment.partition("=")
            assert name.startswith(PREFIX), f"{block}: {line!r} is not a worker setting"
            settings[name] = value
    return settings


def recipe(style: str, flavour: str) -> dict[str, str]:
    """Services + the style's block (+ its other-queue block), hosts left as the docs say."""
    settings = documented("services") | documented(style)
    if flavour != NATURAL[style]:
        settings |= documented(f"{style} {flavour}")
    return settings


def environment(stack: Stack, docs: dict[str, str]) -> dict[str, str]:
    """The docs' settings, their hosts pointed at the test's HTTP server, plus the plumbing."""
    plumbing = {f"{PREFIX}{n}": v for n in PLUMBING for v in [stack.environment()[f"{PREFIX}{n}"]]}
    pointed = {name: HOST.sub(stack.http.url, value) for name, value in docs.items()}
    return plumbing | pointed


def settings_from(env: dict[str, str]) -> Settings:
    """``Settings`` read from exactly ``env``, through the environment like the CLI reads it."""
    outside = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    with mock.patch.dict(os.environ, outside | env, clear=True):
        return Settings()


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    outside = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "email_worker", *args],
        env=outside | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(stack: Stack, settings: Settings) -> Worker:
    """``email-worker run`` in a thread, with the inline callback notifier; fails the test with
    the start-up error when it does not start."""
    worker = Worker(settings, notifier=inline_notifier(settings))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(install_signals=False)
        except Exception as exc:  # a start-up error: reported by the test, not the thread
            errors.append(exc)
            worker.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stack.workers.append((worker, thread))
    wait_for(lambda: worker.consumer.consuming or bool(errors), 30, "the worker to consume")
    assert not errors, f"email-worker run did not start: {errors[0]}"
    return worker


def serve_services(http: FakeHttpServer, docs: dict[str, str], users: dict[str, str]) -> None:
    """The template and user services, at the paths and with the tokens the docs give."""
    serve_templates(
        http, docs[f"{PREFIX}TEMPLATE_PATH"], docs[f"{PREFIX}TEMPLATE_SERVICE_TOKEN"], ["welcome"]
    )
    serve_users(
        http, docs[f"{PREFIX}USER_SERVICE_PATH"], docs[f"{PREFIX}USER_SERVICE_TOKEN"], users
    )


def serve_templates(http: FakeHttpServer, path: str, token: str, codes: list[str]) -> None:
    """A template service answering ``{"data": {"name", "content", "version"}}`` at ``path``
    (with ``{template_code}``), 401 without ``Authorization: Bearer <token>``."""

    def answer(seen: Seen) -> Reply:
        if seen.headers.get("Authorization") != f"Bearer {token}":
            return Reply(401, {"detail": "Not authenticated"})
        data = {"name": "Welcome to {{name}}", "content": "<h1>Hi {{name}}</h1>", "version": 1}
        return Reply(200, {"data": data})

    for code in codes:
        http.route("GET", path.replace("{template_code}", code), answer)


def serve_users(http: FakeHttpServer, path: str, token: str, users: dict[str, str]) -> None:
    """A user service answering ``{"status", "result": {"full_name", "contact": {"email"},
    "settings": {"email_notifications"}}}``, 403 without ``X-Service-Token: <token>``."""

    def answer_for(user_id: str, address: str) -> Callable[[Seen], Reply]:
        def answer(seen: Seen) -> Reply:
            if seen.headers.get("X-Service-Token") != token:
                return Reply(403, {"status": "error", "message": "forbidden"})
            result = {
                "id": user_id,
                "full_name": "Grace Hopper",
                "contact": {"email": address, "phone": None},
                "settings": {"email_notifications": True, "sms_notifications": False},
            }
            return Reply(200, {"status": "ok", "result": result})

        return answer

    for user_id, address in users.items():
        http.route("GET", path.replace("{user_id}", user_id), answer_for(user_id, address))
