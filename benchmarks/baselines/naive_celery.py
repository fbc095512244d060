"""The naive baseline: one Celery task per email, written the way most public notification
services write it. Each task opens a new Postgres connection and checks-then-inserts the
request id (racy, as they are), fetches the template over a new HTTP connection, renders it
with a new Jinja2 ``Environment``, opens a new SMTP connection to send, and posts the status
callback with a new ``httpx`` client. Run by the benchmark as
``celery -A benchmarks.baselines.naive_celery worker --pool=threads --concurrency=8``;
configured from ``BENCH_NAIVE_*`` variables. Deliberately not what the worker does."""

from __future__ import annotations

import json
import os
import smtplib
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import jinja2
import psycopg2
from celery import Celery

TASK = "naive.send_email"
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS naive_emails"
    " (request_id text PRIMARY KEY, sent_at timestamptz NOT NULL)"
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"BENCH_NAIVE_{name}", default)


def make_app(broker_url: str, queue: str) -> Celery:
    """The baseline's Celery app (also used by the benchmark to publish the tasks)."""
    app = Celery("naive", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no pidbox queue left behind
    )
    app.task(name=TASK, shared=False)(send_email)
    return app


def send_email(message: dict[str, Any]) -> str:
    """Send one email the naive way; ``duplicate`` when the request id was already sent."""
    request_id = str(message["request_id"])
    connection = psycopg2.connect(_env("DATABASE_URL"))  # a new connection per task
    try:
        with connection, connection.cursor() as cur:
            cur.execute("SELECT 1 FROM naive_emails WHERE request_id = %s", (request_id,))
            if cur.fetchone():
                return "duplicate"
        url = f"{_env('TEMPLATE_URL')}/api/v1/templates/{message['template_code']}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            template = json.load(answer)["data"]
        environment = jinja2.Environment(autoescape=True)  # a new environment per task
        variables = message.get("variables") or {}
        email = EmailMessage()
        email["From"] = "notifications@example.com"
        email["To"] = str(message["to_email"])
        email["Subject"] = environment.from_string(template["subject"]).render(**variables)
        email.set_content("Please view this message in HTML.")
        html = environment.from_string(template["html_body"]).render(**variables)
        email.add_alternative(html, subtype="html")
        port = int(_env("SMTP_PORT", "25"))
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:  # a new SMTP connection
            smtp.send_message(email)
        with connection, connection.cursor() as cur:
            cur.execute(
                "INSERT INTO naive_emails (request_id, sent_at) VALUES (%s, now())"
                " ON CONFLICT DO NOTHING",
                (request_id,),
            )
    finally:
        connection.close()
    event = {
        "notification_id": request_id,
        "status": "delivered",
        "timestamp": datetime.now(UTC).isoformat(),
        "error": None,
    }
    with httpx.Client(timeout=10) as client:  # a new HTTP client per callback
        client.post(_env("CALLBACK_URL"), json=event)
    return "sent"


app = make_app(_env("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"), _env("QUEUE", "naive"))
