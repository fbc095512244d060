"""Changing the dead-letter queue: replaying records to ``email.queue`` and purging them.

Replay republishes a record's original body and properties, without the dead-letter headers
and the broker's ``x-death`` bookkeeping, confirmed and ``mandatory``, and only then removes
the record. The order is the guarantee: a record is always somewhere (the dead-letter queue or
``email.queue``); a crash between the confirm and the ack leaves a copy in both, which is
harmless because the ledger deduplicates by ``request_id`` (CONTRACT section 4). Records that do
not match stay unacked until the scan closes, so they keep their place and order.

Purge removes only records whose digest is in the last export of the queue, unless forced:
the refusal is decided before anything is removed, and records that arrive meanwhile are not
in the export, so they stay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from email_worker.broker.publisher import Publisher, copy_properties
from email_worker.broker.topology import Connection, Properties
from email_worker.dlq.records import DeadLetterRecord, ExportSummary, Scan
from schemas.deadletter import DeadLetterHeaders

DEAD_LETTER_HEADERS = frozenset(DeadLetterHeaders.model_fields)
# The broker's dead-lettering bookkeeping (``x-last-death-*`` from 3.13) and the quorum queue's
# delivery counter: a replayed message starts afresh.
BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
BROKER_PREFIXES = ("x-first-death-", "x-last-death-")


@dataclass(frozen=True)
class Selector:
    """Which records to act on: all of them, or those matching every given field."""

    reason: str | None = None
    request_id: str | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.reason is not None and record.headers.failure_reason != self.reason:
            return False
        return self.request_id is None or record.headers.request_id == self.request_id


def replay_properties(properties: Properties) -> Properties:
    """The original properties and headers, without what dead-lettering added."""
    dropped = {
        name: None
        for name in properties.headers or {}
        if name in DEAD_LETTER_HEADERS or name in BROKER_HEADERS or name.startswith(BROKER_PREFIXES)
    }
    return copy_properties(properties, dropped)


class Pacer:
    """Spaces calls to ``wait`` at least ``1 / rate`` seconds apart (no limit when ``rate`` is
    None); the first call returns at once."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


@dataclass(frozen=True)
class Target:
    """Where replayed records go: the exchange and the first routing key of ``email.queue``."""

    publisher: Publisher
    exchange: str
    routing_key: str


def replay(
    connection: Connection,
    queue: str,
    target: Target | None,
    selector: Selector,
    *,
    limit: int | None = None,
    pacer: Pacer | None = None,
    report: Callable[[DeadLetterRecord], None] = lambda record: None,
) -> int:
    """Republish matching records (oldest first, at most ``limit``) to ``target`` and remove
    each once the broker confirmed it; with ``target`` None (dry run) only ``report`` them.
    Returns how many were replayed (or would be).

    Raises ``PublishError`` when a publish is not confirmed: that record and all later ones
    stay in place; the ones before it were replayed.
    """
    pacer = pacer or Pacer(None)
    replayed = 0
    with Scan(connection, queue) as scan:
        for tag, record in scan.records():
            if limit is not None and replayed >= limit:
                break
            if not selector.matches(record):
                continue
            if target is not None:
                pacer.wait()
                target.publisher.publish(
                    target.exchange,
                    target.routing_key,
                    record.body,
                    replay_properties(record.properties),
                )
                scan.remove(tag)
            report(record)
            replayed += 1
    return replayed


class NotExported(RuntimeError):
    """Purge refused: some records are not in the last export (or there was none)."""


def purge(
    connection: Connection, queue: str, exported: ExportSummary | None, *, force: bool
) -> int:
    """Remove records and return how many. With ``force`` the whole queue is purged; otherwise
    only records in ``exported``, and only when every current record is in it.

    Raises ``NotExported`` (removing nothing) when a record was not exported.
    """
    if force:
        channel = connection.channel()
        try:
            return int(channel.queue_purge(queue).method.message_count)
        finally:
            channel.close()
    if exported is None:
        raise NotExported(f"no export of {queue!r} is recorded")
    covered = set(exported.digests)
    with Scan(connection, queue) as scan:
        tags = []
        missing = 0
        for tag, record in scan.records():
            if record.digest() in covered:
                tags.append(tag)
            else:
                missing += 1
        if missing:
            raise NotExported(
                f"{missing} of {len(tags) + missing} record(s) are not in the last export "
                f"({exported.file}, {exported.exported_at})"
            )
        for tag in tags:
            scan.remove(tag)
        return len(tags)
