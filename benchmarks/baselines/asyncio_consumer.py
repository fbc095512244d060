"""The asyncio baseline: the consumer a team picks when it wants speed without a framework,
aio-pika (manual acks, prefetch 64), asyncpg (a connection pool), aiosmtplib (a pool of
persistent SMTP connections) and one ``httpx.AsyncClient`` (template fetches, cached compiled,
and callbacks), with the same guarantees a user would reasonably add: the request id claimed in
Postgres before the send (``INSERT ... ON CONFLICT DO NOTHING``: a duplicate is acked unsent),
marked sent after it, the callback posted, then the message acked. One process, one event loop.

Run by the benchmark as ``python -m benchmarks.baselines.asyncio_consumer``, configured from the
same ``BENCH_NAIVE_*`` variables as the Celery baselines; it consumes the spec's JSON messages
from ``BENCH_NAIVE_QUEUE`` (declared by the benchmark) until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aio_pika
import aiosmtplib
import asyncpg
import httpx
import jinja2

PREFETCH = 64
SMTP_CONNECTIONS = 8
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS naive_emails (request_id text PRIMARY KEY, sent_at timestamptz)"
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"BENCH_NAIVE_{name}", default)


class SmtpPool:
    """``size`` persistent connections handed out one task at a time."""

    def __init__(self, port: int, size: int) -> None:
        self._port, self._size = port, size
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self._size):
            self._idle.put_nowait(await self._connect())

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self._port, start_tls=False)
        await client.connect()
        return client

    async def send(self, email: EmailMessage) -> None:
        client = await self._idle.get()
        try:
            try:
                await client.send_message(email)
            except aiosmtplib.SMTPServerDisconnected:
                client = await self._connect()  # a dropped connection: reconnect once
                await client.send_message(email)
        finally:
            self._idle.put_nowait(client)


class Baseline:
    def __init__(self) -> None:
        self.environment = jinja2.Environment(autoescape=True, enable_async=False)
        self.templates: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        self.http = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=32))
        self.smtp = SmtpPool(int(_env("SMTP_PORT", "25")), SMTP_CONNECTIONS)
        self.db: asyncpg.Pool | None = None

    async def template(self, code: str) -> tuple[jinja2.Template, jinja2.Template]:
        cached = self.templates.get(code)
        if cached is None:
            answer = await self.http.get(f"{_env('TEMPLATE_URL')}/api/v1/templates/{code}")
            answer.raise_for_status()
            data = answer.json()["data"]
            subject = self.environment.from_string(data["subject"])
            html = self.environment.from_string(data["html_body"])
            cached = self.templates.setdefault(code, (subject, html))
        return cached

    async def handle(self, message: dict[str, Any]) -> None:
        assert self.db is not None
        request_id = str(message["request_id"])
        claimed = await self.db.fetchval(
            "INSERT INTO naive_emails (request_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1",
            request_id,
        )
        if claimed is None:
            return  # a duplicate: sent (or being sent) before
        subject, html = await self.template(str(message["template_code"]))
        variables = message.get("variables") or {}
        email = EmailMessage()
        email["From"] = "notifications@example.com"
        email["To"] = str(message["to_email"])
        email["Subject"] = subject.render(**variables)
        email.set_content("Please view this message in HTML.")
        email.add_alternative(html.render(**variables), subtype="html")
        await self.smtp.send(email)
        await self.db.execute(
            "UPDATE naive_emails SET sent_at = now() WHERE request_id = $1", request_id
        )
        event = {
            "notification_id": request_id,
            "status": "delivered",
            "timestamp": datetime.now(UTC).isoformat(),
            "error": None,
        }
        await self.http.post(_env("CALLBACK_URL"), json=event)

    async def on_message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            await self.handle(json.loads(incoming.body))
        except Exception:
            await incoming.nack(requeue=True)
            raise
        await incoming.ack()


async def main() -> None:
    baseline = Baseline()
    baseline.db = await asyncpg.create_pool(_env("DATABASE_URL"), min_size=4, max_size=16)
    await baseline.smtp.open()
    connection = await aio_pika.connect_robust(_env("BROKER_URL"))
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(_env("QUEUE"), ensure=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Each delivery is handled in a task of its own: up to PREFETCH at once (prefetch bounds it).
    running: set[asyncio.Task[None]] = set()

    async def spawn(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        task = asyncio.create_task(baseline.on_message(incoming))
        running.add(task)
        task.add_done_callback(running.discard)

    tag = await queue.consume(spawn)
    await stop.wait()
    await queue.cancel(tag)
    await connection.close()
    await baseline.http.aclose()
    await baseline.db.close()


if __name__ == "__main__":
    asyncio.run(main())
