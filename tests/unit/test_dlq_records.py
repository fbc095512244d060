"""Dead-letter records as JSON (show, export), the export round trip and the export state."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pika
import pytest

from email_worker.dlq.records import (
    DeadLetterRecord,
    ExportState,
    ExportSummary,
    format_line,
    jsonable,
    parse_export_line,
    queue_key,
)
from email_worker.dlq.show import record_ids, show_document
from schemas.deadletter import DeadLetterHeaders

HEADERS = {
    "failure_reason": "template_not_found",
    "failure_detail": "template 'x' not found",
    "attempts": 1,
    "first_attempt_at": "2026-11-23T10:00:00Z",
    "failed_at": "2026-11-23T10:00:01Z",
    "request_id": "req-1",
    "x-death": [{"count": 1, "time": datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)}],
}


def record(
    body: bytes = b'{"request_id": "req-1"}', message_id: str | None = None, **headers: object
) -> DeadLetterRecord:
    merged = {key: value for key, value in {**HEADERS, **headers}.items() if value is not None}
    properties = pika.BasicProperties(
        content_type="application/json",
        correlation_id="c-1",
        message_id=message_id,
        delivery_mode=2,
        headers=merged,
    )
    return DeadLetterRecord(DeadLetterHeaders.from_amqp(merged), body, properties, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"text", "text"),
        (b"\xff\x00", {"base64": "/wA="}),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
        (Decimal("1.50"), "1.50"),
        ([b"a", (1, None)], ["a", [1, None]]),
        ({"k": {"n": True}}, {"k": {"n": True}}),
    ],
)
def test_header_values_become_json(value: object, expected: object) -> None:
    assert jsonable(value) == expected


def test_export_line_round_trips_body_and_properties_byte_for_byte() -> None:
    original = record(body=b"\xff not utf-8 \x00")
    body, properties = parse_export_line(original.export_line())
    assert body == original.body
    assert properties.correlation_id == "c-1" and properties.delivery_mode == 2
    assert properties.headers["request_id"] == "req-1"
    assert properties.headers["x-death"][0]["time"] == "2026-11-23T10:00:01+00:00"


@pytest.mark.parametrize(
    "line", ['{"headers": {}}', "[]", '{"body_base64": "", "properties": {"x": 1}}']
)
def test_a_foreign_line_is_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_export_line(line)


def test_digest_is_stable_and_tells_records_apart() -> None:
    assert record().digest() == record().digest()
    assert record().digest() != record(failed_at="2026-11-23T10:00:02Z").digest()
    assert record().digest() != record(body=b"{}").digest()


def test_show_prints_a_text_body_as_text_and_binary_as_base64() -> None:
    shown = json.loads(show_document(record(), ("request_id",)))
    assert shown["body"] == '{"request_id": "req-1"}' and "body_base64" not in shown
    assert shown["headers"]["failure_reason"] == "template_not_found"
    assert (shown["position"], shown["matched_by"]) == (3, ["request_id"])
    binary = json.loads(show_document(record(body=b"\xff")))
    assert binary["body_base64"] == "/w==" and "matched_by" not in binary


def test_list_line_formats() -> None:
    assert format_line(record(), as_json=False) == (
        "3\treq-1\ttemplate_not_found\t1\t2026-11-23T10:00:01Z"
    )
    assert format_line(record(b"{}", request_id=None), as_json=False).startswith("3\t-\t")
    line = json.loads(format_line(record(), as_json=True))
    assert (line["attempts"], line["position"]) == (1, 3)


NESTJS = b'{"pattern": "email", "data": {"notificationId": "n-7", "requestId": "r-7"}}'


@pytest.mark.parametrize(
    ("body", "message_id", "headers", "expected"),
    [
        (b'{"request_id": "r-1"}', None, {}, {"request_id": {"req-1", "r-1"}}),
        (NESTJS, "m-7", {"request_id": None}, {"request_id": {"r-7"}, "notification_id": {"n-7"}}),
        (
            b'{"notification_id": "n-1", "template_code": 7',  # truncated, invalid
            "m-1",
            {"request_id": None},
            {"notification_id": {"n-1"}},
        ),
        (b"\xff\xfe", "m-2", {"request_id": None}, {}),
    ],
)
def test_record_ids_come_from_headers_body_and_properties(
    body: bytes, message_id: str | None, headers: dict[str, object], expected: dict[str, set[str]]
) -> None:
    ids = record_ids(record(body, message_id, **headers))
    message_ids = {message_id} if message_id else set()
    assert ids == {"request_id": set(), "notification_id": set()} | expected | {
        "message_id": message_ids
    }


def test_export_state_keeps_the_last_export_per_queue(tmp_path: Path) -> None:
    state = ExportState(tmp_path / "deep" / "state.json")
    assert state.last("q1") is None
    first = ExportSummary("q1", "/x/1.jsonl", 2, "2026-01-01T00:00:00Z", "", ("d1", "d2"))
    state.record(first)
    state.record(ExportSummary("q2", "/x/2.jsonl", 0, "2026-01-01T00:00:01Z", "", ()))
    state.record(ExportSummary("q1", "/x/3.jsonl", 1, "2026-01-01T00:00:02Z", "", ("d3",)))
    last = state.last("q1")
    assert last is not None and last.file == "/x/3.jsonl" and last.digests == ("d3",)
    assert state.last("q2") is not None
    assert (tmp_path / "deep" / "state.json").stat().st_mode & 0o077 == 0


def test_queue_key_names_the_broker_without_credentials() -> None:
    key = queue_key("amqp://user:s3cret@mq.internal:5673/prod", "failed.queue")
    assert key == "mq.internal:5673 vhost=prod queue=failed.queue"
    assert "s3cret" not in key and "user" not in key
