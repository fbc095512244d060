"""The dead-letter queue for SREs: reading records in place, showing and exporting them.

A ``Scan`` walks the records that were in ``failed.queue`` when it started, one ``basic.get``
at a time with manual acks. A record leaves the queue only when the caller ``remove``s it (replay
and purge do, once their work is safe); closing the scan's channel hands every other record
back, and the broker puts unacked messages of a classic queue back at their original
positions. So reading never loses or reorders records, counts against no delivery limit, and a
crash half-way (kill -9, lost connection) has the same effect as closing. ``basic.get`` ignores
prefetch, so a scan reaches the whole queue, not just a prefetch window. Records that arrive
while a scan runs are left for the next one. ``export`` writes JSON lines and records what it
wrote (see ``ExportState``) so that ``purge`` can prove nothing unexported is removed.
Finding and showing one record is ``email_worker.dlq.show``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from email_worker.broker.delivery import PROPERTY_NAMES
from email_worker.broker.topology import ChannelClosed, Connection, Properties, address_of
from schemas.deadletter import DeadLetterHeaders, rfc3339
from schemas.inbound import peek_request_id


class DlqError(RuntimeError):
    """The dead-letter queue cannot be read (missing queue, refused by the broker)."""


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record; ``position`` is its place in the queue when read (1 = the oldest), the
    number ``dlq list`` prints and ``dlq show --position`` takes."""

    headers: DeadLetterHeaders
    body: bytes
    properties: Properties
    position: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "request_id": self.headers.request_id,
            "failure_reason": self.headers.failure_reason,
            "attempts": self.headers.attempts,
            "failed_at": self.headers.failed_at,
            "failure_detail": self.headers.failure_detail,
        }

    def document(self) -> dict[str, Any]:
        """The whole record as JSON-safe data: every header (the broker's too), the properties
        and the body in base64 (byte for byte, whatever its encoding)."""
        properties = {
            name: getattr(self.properties, name)
            for name in PROPERTY_NAMES
            if getattr(self.properties, name) is not None
        }
        return {
            "headers": jsonable(self.properties.headers or {}),
            "properties": properties,
            "body_base64": base64.b64encode(self.body).decode("ascii"),
        }

    def export_line(self) -> str:
        return json.dumps(self.document(), sort_keys=True, ensure_ascii=False)

    def digest(self) -> str:
        """A fingerprint of the record as exported; equal records give equal digests."""
        return hashlib.sha256(self.export_line().encode()).hexdigest()[:32]


def jsonable(value: object) -> Any:
    """An AMQP header value as JSON data: timestamps as ISO 8601, decimals as strings, bytes
    as text when they are UTF-8 and ``{"base64": ...}`` otherwise."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def parse_export_line(line: str) -> tuple[bytes, Properties]:
    """The body and properties (headers included) of one exported line, ready to publish.
    Raises ``ValueError`` on a line that is not an exported record."""
    document = json.loads(line)
    if not isinstance(document, dict) or "body_base64" not in document:
        raise ValueError("not an exported dead-letter record")
    properties = dict(document.get("properties") or {})
    unknown = set(properties) - set(PROPERTY_NAMES)
    if unknown:
        raise ValueError(f"unknown properties: {sorted(unknown)}")
    body = base64.b64decode(document["body_base64"], validate=True)
    return body, Properties(headers=document.get("headers") or {}, **properties)


class Scan:
    """One pass over the records in ``queue`` at the start; see the module docstring.

    Raises ``DlqError`` when the queue does not exist. Use as a context manager: leaving it
    closes the channel, which returns every record not ``remove``d to its place.
    """

    def __init__(self, connection: Connection, queue: str) -> None:
        self.queue = queue
        self._channel = connection.channel()
        try:
            self.depth: int = self._channel.queue_declare(queue, passive=True).method.message_count
        except ChannelClosed as exc:
            raise DlqError(f"queue {queue!r}: {exc.reply_text}") from exc

    def records(self) -> Iterator[tuple[int, DeadLetterRecord]]:
        """Yield (delivery tag, record), oldest first, for at most ``depth`` records; records
        are numbered from 1 in that order."""
        for position in range(1, self.depth + 1):
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=False)
            if method is None:  # someone else took records meanwhile
                return
            headers = DeadLetterHeaders.from_amqp(properties.headers or {})
            if headers.request_id is None:  # dead-lettered by the broker (delivery limit)
                headers = headers.model_copy(update={"request_id": peek_request_id(body)})
            yield method.delivery_tag, DeadLetterRecord(headers, body, properties, position)

    def remove(self, tag: int) -> None:
        """Remove one record for good (ack). Call only once its content is safe elsewhere."""
        self._channel.basic_ack(tag)

    def close(self) -> None:
        if self._channel.is_open:
            self._channel.close()  # unacked records go back to their original positions

    def __enter__(self) -> Scan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def browse(
    connection: Connection, queue: str, *, limit: int, reason: str | None = None
) -> Iterator[DeadLetterRecord]:
    """Yield up to ``limit`` records (oldest first) matching ``reason``; leaves them all in
    place, in order. Raises ``DlqError`` when the queue does not exist."""
    with Scan(connection, queue) as scan:
        yielded = 0
        for _, record in scan.records() if limit > 0 else ():
            if reason is None or record.headers.failure_reason == reason:
                yield record
                yielded += 1
                if yielded >= limit:
                    return


def format_line(record: DeadLetterRecord, *, as_json: bool) -> str:
    """``position request_id failure_reason attempts failed_at``, tab-separated (``-`` for a
    record without a request_id), or the summary as one JSON object."""
    summary = record.summary()
    if as_json:
        return json.dumps(summary, sort_keys=True)
    summary["request_id"] = summary["request_id"] or "-"
    return "{position}\t{request_id}\t{failure_reason}\t{attempts}\t{failed_at}".format(**summary)


@dataclass(frozen=True)
class ExportSummary:
    """What one export wrote; ``digests`` let ``purge`` check each record was exported."""

    queue: str
    file: str
    records: int
    exported_at: str
    newest_failed_at: str
    digests: tuple[str, ...]

    def marker(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "file": self.file,
            "records": self.records,
            "exported_at": self.exported_at,
            "newest_failed_at": self.newest_failed_at,
        }


def export(connection: Connection, queue: str, path: Path, *, key: str) -> ExportSummary:
    """Write every record of ``queue`` to ``path`` as JSON lines (mode 0600: bodies hold
    addresses), atomically, and a marker ``<path>.meta.json`` beside it. Leaves the queue as it
    was. ``key`` names the queue in the marker (broker address, vhost and queue, no secrets)."""
    temporary = path.with_name(path.name + ".partial")
    digests: list[str] = []
    newest = ""
    with Scan(connection, queue) as scan, _private(temporary) as out:
        for _, record in scan.records():
            out.write(record.export_line() + "\n")
            digests.append(record.digest())
            newest = max(newest, record.headers.failed_at)
    os.replace(temporary, path)
    summary = ExportSummary(key, str(path.resolve()), len(digests), _now(), newest, tuple(digests))
    marker = path.with_name(path.name + ".meta.json")
    marker.write_text(json.dumps(summary.marker(), indent=2) + "\n", encoding="utf-8")
    return summary


@contextlib.contextmanager
def _private(path: Path) -> Iterator[Any]:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        yield handle


def _now() -> str:
    return rfc3339(datetime.now(UTC))


class ExportState:
    """The last export of each queue, kept in one JSON file (by default
    ``$XDG_STATE_HOME/email-worker/dlq-exports.json``); written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, summary: ExportSummary) -> None:
        state = self._load()
        state[summary.queue] = {**summary.marker(), "digests": list(summary.digests)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".partial")
        with _private(temporary) as out:
            json.dump(state, out, indent=1, sort_keys=True)
        os.replace(temporary, self.path)

    def last(self, key: str) -> ExportSummary | None:
        """The last export of the queue named ``key``, or None when there was none."""
        entry = self._load().get(key)
        if not isinstance(entry, dict):
            return None
        digests = tuple(str(d) for d in entry.get("digests", ()))
        return ExportSummary(
            key,
            str(entry.get("file", "")),
            int(entry.get("records", 0)),
            str(entry.get("exported_at", "")),
            str(entry.get("newest_failed_at", "")),
            digests,
        )

    def _load(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return loaded if isinstance(loaded, dict) else {}


def queue_key(amqp_url: str, queue: str) -> str:
    """The queue's identity for export records: host, port, vhost and name, never credentials."""
    host, port, vhost = address_of(amqp_url)
    return f"{host}:{port} vhost={vhost} queue={queue}"
