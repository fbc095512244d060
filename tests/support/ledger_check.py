"""The ledger checker (RELIABILITY rule 19, in the style of Jepsen's queue checker).

It owns the proof that a run lost nothing: ``LedgerCheck`` publishes requests through the real
broker, each with its own recipient address, then collects what the relay holds (with
Message-IDs), what ``failed.queue`` holds (browsed in place, never consumed), what the ledger
says and, optionally, which callbacks arrived. ``classify`` (pure, unit-tested with synthetic
observations) puts every request in exactly one class:

    delivered_once   one copy at the relay, the ledger says ``sent`` with that Message-ID
    dead_lettered    in ``failed.queue`` with a reason, no copy the relay acknowledged
    cancelled        cancelled before it was sent: the ledger says so, nothing went out
    duplicated       several copies, all with one Message-ID, and the ledger recorded an
                     ambiguous outcome (``unknown``, a lease taken over or expired) or the
                     relay itself holds a copy it never acknowledged
    lost             nowhere: no copy, no dead letter
    unexpected       anything else: delivered and dead-lettered, a duplicate without an
                     ambiguous outcome, Message-IDs that differ, the ledger disagreeing with
                     the relay, a status callback that moved backwards or never came, a
                     result other than the one the test expected, or a stray copy

A run passes with lost = 0 and unexpected = 0. Usable outside pytest (``scripts/soak.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
import psycopg2

from email_worker.dlq.records import browse
from tests.support.ledger_classify import (
    ANY,
    DELIVERED,
    KEY_HEADER,
    OUTCOMES,
    Copy,
    DeadLetter,
    LedgerRow,
    Observations,
    Report,
    Request,
    classify,
)

__all__ = [
    "ANY",
    "DELIVERED",
    "KEY_HEADER",
    "OUTCOMES",
    "Copy",
    "DeadLetter",
    "LedgerCheck",
    "LedgerRow",
    "Observations",
    "Report",
    "Request",
    "classify",
]


class LedgerCheck:
    """Publishes requests through the real broker and collects what became of them."""

    def __init__(
        self,
        *,
        amqp_url: str,
        database_url: str,
        exchange: str,
        failed_queue: str,
        routing_key: str = "email",
        domain: str = "example.com",
    ) -> None:
        self.amqp_url, self.database_url = amqp_url, database_url
        self.exchange, self.failed_queue, self.routing_key = exchange, failed_queue, routing_key
        self.domain = domain
        self.requests: list[Request] = []
        self._bodies: list[tuple[str, bytes]] = []

    def add(
        self,
        key: str,
        *,
        body: dict[str, Any] | bytes | None = None,
        recipient: str | None = "",
        expect: str = DELIVERED,
        template_code: str = "welcome",
        not_before: float | None = None,
    ) -> Request:
        """Register a request (not yet published). Without ``body`` a valid message to a
        recipient of its own (``recipient=""``: derived from the key) is built.
        ``not_before``: its send_at (epoch seconds), which no copy may precede."""
        if recipient == "":
            recipient = f"{key}@{self.domain}".lower()
        if body is None:
            body = {
                "request_id": key,
                "template_code": template_code,
                "to_email": recipient,
                "variables": {"name": "Ada", "link": "https://example.com/x"},
            }
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = Request(key, recipient, expect, not_before)
        self.requests.append(request)
        self._bodies.append((key, raw))
        return request

    def publish(self) -> None:
        """Publish every registered request not yet published (confirmed, mandatory)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            while self._bodies:  # a broker failure half-way leaves the rest for a retry
                key, raw = self._bodies[0]
                properties = pika.BasicProperties(
                    delivery_mode=2, content_type="application/json", headers={KEY_HEADER: key}
                )
                channel.basic_publish(
                    self.exchange, self.routing_key, raw, properties, mandatory=True
                )
                self._bodies.pop(0)
        finally:
            if connection.is_open:
                connection.close()

    def dead_letters(self) -> list[DeadLetter]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            records = list(browse(connection, self.failed_queue, limit=100_000))
        finally:
            connection.close()
        found = []
        for record in records:
            key = (record.properties.headers or {}).get(KEY_HEADER, record.headers.request_id)
            key = key.decode() if isinstance(key, bytes) else key
            found.append(
                DeadLetter(key if isinstance(key, str) else None, record.headers.failure_reason)
            )
        return found

    def ledger(self) -> dict[str, LedgerRow]:
        keys = [r.key for r in self.requests]
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT request_id, status, message_id, failure_reason, attempts"
                " FROM email_requests WHERE request_id = ANY(%s)",
                (keys,),
            )
            rows = cur.fetchall()
            cur.execute(
                "SELECT request_id, event, reason FROM email_events WHERE request_id = ANY(%s)"
                " ORDER BY id",
                (keys,),
            )
            events: dict[str, list[str]] = {}
            retries: dict[str, list[str]] = {}
            for key, event, reason in cur.fetchall():
                events.setdefault(key, []).append(event)
                if event == "pending" and reason:
                    retries.setdefault(key, []).append(reason)
        conn.close()
        return {
            k: LedgerRow(s, m, tuple(events.get(k, ())), r, a, tuple(retries.get(k, ())))
            for k, s, m, r, a in rows
        }

    def observe(
        self, copies: Iterable[Copy], callbacks: Iterable[tuple[str, str]] | None = None
    ) -> Observations:
        """Collect the broker's and the ledger's side; ``callbacks`` as (key, status) pairs."""
        statuses: dict[str, list[str]] | None = None
        if callbacks is not None:
            statuses = {}
            for key, status in callbacks:
                statuses.setdefault(key, []).append(status)
        return Observations(list(copies), self.dead_letters(), self.ledger(), statuses)

    def check(
        self, copies: Iterable[Copy], callbacks: Iterable[tuple[str, str]] | None = None
    ) -> Report:
        return classify(self.requests, self.observe(copies, callbacks))

    def settled(self) -> bool:
        """Every request has its final place: the ledger says ``sent`` (or cancelled), or a
        dead letter."""
        rows = self.ledger()
        waiting = {r.key for r in self.requests if not _final(rows.get(r.key, LedgerRow("")))}
        if waiting:
            waiting -= {d.key for d in self.dead_letters()}
        return not waiting


def _final(row: LedgerRow) -> bool:
    return row.status == "sent" or (row.status == "failed" and row.reason == "cancelled")


def copies_from(messages: Iterable[Any]) -> list[Copy]:
    """``Copy`` per recipient of ``tests.support.smtp.ReceivedMessage``-like objects."""
    return [
        Copy(rcpt, m.message_id, bool(m.ambiguous), getattr(m, "received_at", None))
        for m in messages
        for rcpt in m.rcpt_tos
    ]


def callbacks_from(
    seen: Iterable[Any], key_field: str = "notification_id", *, distinct: bool = False
) -> list[tuple[str, str]]:
    """(key, status) pairs from recorded callback POSTs (``tests.support.http.Seen``).
    ``distinct``: one pair per ``webhook-id`` (a status event posted again, at least once,
    counts once: receivers dedupe on it)."""
    pairs, events = [], set()
    for request in seen:
        event = {k.lower(): v for k, v in request.headers.items()}.get("webhook-id")
        if distinct and event is not None:
            if event in events:
                continue
            events.add(event)
        body = request.json()
        pairs.append((str(body.get(key_field)), str(body.get("status"))))
    return pairs


def wait_settled(check: LedgerCheck, idle: Callable[[], bool], timeout: float) -> bool:
    """Poll until every request is settled and ``idle()``; False at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if idle() and check.settled():
            return True
        time.sleep(0.2)
    return False
