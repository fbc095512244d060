"""Finding and showing dead-letter records for ``dlq show`` (CONTRACT section 8).

A record is found by any of its ids: the ``request_id`` header, the ``request_id`` or
``notification_id`` in its body (in any shape the worker accepts, read with
``schemas.inbound.peek_ids`` so that an invalid body still yields the ids it carries), or the
AMQP ``message_id`` property; or by its position as ``dlq list`` numbers it (1 = the oldest).
So a record without a ``request_id`` (an invalid message, one the broker dead-lettered) can be
inspected too. Reading leaves every record in place (``email_worker.dlq.records.Scan``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from email_worker.broker.topology import Connection
from email_worker.dlq.records import DeadLetterRecord, browse
from schemas.inbound import peek_ids


@dataclass(frozen=True)
class Found:
    """A record and which of its ids matched (empty when found by position)."""

    record: DeadLetterRecord
    matched_by: tuple[str, ...]


def record_ids(record: DeadLetterRecord) -> dict[str, set[str]]:
    """Every id a record can be found by, by kind."""
    peeked = peek_ids(record.body)
    ids: dict[str, set[str]] = {"request_id": set(), "notification_id": set(), "message_id": set()}
    for kind, value in (
        ("request_id", record.headers.request_id),
        ("request_id", peeked.request_id),
        ("notification_id", peeked.notification_id),
        ("message_id", record.properties.message_id),
    ):
        if isinstance(value, str) and value:
            ids[kind].add(value)
    return ids


def find(
    connection: Connection, queue: str, *, key: str | None, position: int | None
) -> list[Found]:
    """The records whose ``request_id``, ``notification_id`` or ``message_id`` is ``key``, or
    the record at ``position``; oldest first. Raises ``DlqError`` for a missing queue."""
    found: list[Found] = []
    for record in browse(connection, queue, limit=sys.maxsize):
        if position is not None:
            if record.position == position:
                return [Found(record, ())]
            continue
        matched = tuple(kind for kind, ids in record_ids(record).items() if key in ids)
        if matched:
            found.append(Found(record, matched))
    return found


def show_document(record: DeadLetterRecord, matched_by: tuple[str, ...] = ()) -> str:
    """``record`` for a reader: its position, what matched, every header, the properties and
    the body as text when it is UTF-8, else base64."""
    document = record.document()
    try:
        document["body"] = record.body.decode("utf-8")
        del document["body_base64"]
    except UnicodeDecodeError:
        pass
    document["position"] = record.position
    if matched_by:
        document["matched_by"] = list(matched_by)
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
