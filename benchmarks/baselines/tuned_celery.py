"""The tuned Celery baseline: what a competent team writes with Celery when it cares about speed
and keeps the guarantees a user would reasonably add. Per worker process: a Postgres connection
pool, one HTTP client with a connection pool (template fetches and callbacks), compiled templates
cached by code, and one persistent SMTP connection per thread (reconnected when it drops).
Per email: claim the request id in Postgres (``INSERT ... ON CONFLICT DO NOTHING``: a duplicate
is skipped), render, send, mark it sent, post the callback; the task is acknowledged late (after
it returned), prefetching a few tasks per thread. Run by the benchmark as
``celery -A benchmarks.baselines.tuned_celery worker --pool=threads --concurrency=16``,
configured from the same ``BENCH_NAIVE_*`` variables as the naive baseline."""

from __future__ import annotations

import contextlib
import os
import smtplib
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import jinja2
from celery import Celery
from psycopg2.pool import ThreadedConnectionPool

TASK = "tuned.send_email"
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS naive_emails (request_id text PRIMARY KEY, sent_at timestamptz)"
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"BENCH_NAIVE_{name}", default)


class _Resources:
    """What one worker process shares between its threads, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadedConnectionPool | None = None
        self._http: httpx.Client | None = None
        self._templates: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        self._environment = jinja2.Environment(autoescape=True)
        self._local = threading.local()

    def pool(self) -> ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadedConnectionPool(1, 32, _env("DATABASE_URL"))
            return self._pool

    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
                self._http = httpx.Client(timeout=10, limits=limits)
            return self._http

    def template(self, code: str) -> tuple[jinja2.Template, jinja2.Template]:
        cached = self._templates.get(code)
        if cached is None:
            answer = self.http().get(f"{_env('TEMPLATE_URL')}/api/v1/templates/{code}")
            answer.raise_for_status()
            data = answer.json()["data"]
            subject = self._environment.from_string(data["subject"])
            html = self._environment.from_string(data["html_body"])
            cached = self._templates.setdefault(code, (subject, html))
        return cached

    def smtp(self) -> smtplib.SMTP:
        connection: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if connection is None:
            connection = smtplib.SMTP("127.0.0.1", int(_env("SMTP_PORT", "25")), timeout=30)
            self._local.smtp = connection
        return connection

    def drop_smtp(self) -> None:
        connection = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()


RESOURCES = _Resources()


def make_app(broker_url: str, queue: str) -> Celery:
    """The baseline's Celery app (also used by the benchmark to publish the tasks)."""
    app = Celery("tuned", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=4,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
    )
    app.task(name=TASK, shared=False)(send_email)
    return app


def _claim(request_id: str) -> bool:
    pool = RESOURCES.pool()
    connection = pool.getconn()
    try:
        with connection, connection.cursor() as cur:
            cur.execute(
                "INSERT INTO naive_emails (request_id) VALUES (%s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (request_id,),
            )
            return cur.fetchone() is not None
    finally:
        pool.putconn(connection)


def _mark_sent(request_id: str) -> None:
    pool = RESOURCES.pool()
    connection = pool.getconn()
    try:
        with connection, connection.cursor() as cur:
            cur.execute(
                "UPDATE naive_emails SET sent_at = now() WHERE request_id = %s", (request_id,)
            )
    finally:
        pool.putconn(connection)


def _send(email: EmailMessage) -> None:
    try:
        RESOURCES.smtp().send_message(email)
    except (smtplib.SMTPServerDisconnected, OSError):
        RESOURCES.drop_smtp()  # a dropped connection: reconnect once
        RESOURCES.smtp().send_message(email)


def send_email(message: dict[str, Any]) -> str:
    """Send one email; ``duplicate`` when the request id was claimed before."""
    request_id = str(message["request_id"])
    if not _claim(request_id):
        return "duplicate"
    subject, html = RESOURCES.template(str(message["template_code"]))
    variables = message.get("variables") or {}
    email = EmailMessage()
    email["From"] = "notifications@example.com"
    email["To"] = str(message["to_email"])
    email["Subject"] = subject.render(**variables)
    email.set_content("Please view this message in HTML.")
    email.add_alternative(html.render(**variables), subtype="html")
    _send(email)
    _mark_sent(request_id)
    event = {
        "notification_id": request_id,
        "status": "delivered",
        "timestamp": datetime.now(UTC).isoformat(),
        "error": None,
    }
    RESOURCES.http().post(_env("CALLBACK_URL"), json=event)
    return "sent"


app = make_app(_env("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"), _env("QUEUE", "tuned"))
