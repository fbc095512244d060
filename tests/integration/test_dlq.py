"""The ``email-worker dlq`` commands against real RabbitMQ (and, for the replay story, the whole
worker on real Postgres, SMTP and HTTP servers)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pydantic import SecretStr

from email_worker import cli
from email_worker.app import declare_topology
from email_worker.config import Settings
from email_worker.dlq.records import browse, parse_export_line
from schemas.deadletter import DeadLetterHeaders
from tests.support.http import Reply
from tests.support.stack import TEMPLATE, Stack, wait_for

pytestmark = pytest.mark.integration

DEAD_LETTER_NAMES = {
    "failure_reason",
    "failure_detail",
    "attempts",
    "first_attempt_at",
    "failed_at",
    "request_id",
}


class Broker:
    """A private topology (classic queues) and the ``EMAIL_WORKER_*`` variables naming it."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.amqp_url = amqp_url
        self.settings = Settings(
            amqp_url=SecretStr(amqp_url),
            exchange=f"{prefix}.notifications.direct",
            email_queue=f"{prefix}.email.queue",
            failed_queue=f"{prefix}.failed.queue",
            retry_queue_prefix=f"{prefix}.email.retry",
            retry_delays=[60],
            queue_type="classic",
        )
        self.env = {
            "EMAIL_WORKER_AMQP_URL": amqp_url,
            "EMAIL_WORKER_EXCHANGE": self.settings.exchange,
            "EMAIL_WORKER_EMAIL_QUEUE": self.settings.email_queue,
            "EMAIL_WORKER_FAILED_QUEUE": self.settings.failed_queue,
        }
        declare_topology(self.settings)

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        return connection, connection.channel()

    def seed(self, *records: tuple[str, str]) -> None:
        """Dead letters as the worker writes them, plus the broker's and a publisher's headers."""
        connection, channel = self._channel()
        try:
            for request_id, reason in records:
                headers: dict[str, Any] = DeadLetterHeaders(
                    failure_reason=reason,
                    failure_detail="detail",
                    attempts=1,
                    first_attempt_at="2026-11-23T10:00:00Z",
                    failed_at="2026-11-23T10:00:01Z",
                    request_id=request_id,
                ).to_amqp()
                headers |= {
                    "x-death": [{"count": 1, "reason": "rejected", "queue": "email.queue"}],
                    "x-first-death-reason": "rejected",
                    "x-trace": "kept",
                }
                properties = pika.BasicProperties(
                    content_type="application/json",
                    correlation_id=f"corr-{request_id}",
                    delivery_mode=2,
                    headers=headers,
                )
                channel.basic_publish("", self.settings.failed_queue, body(request_id), properties)
        finally:
            connection.close()

    def dead_ids(self) -> list[str | None]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            records = browse(connection, self.settings.failed_queue, limit=1000)
            return [r.headers.request_id for r in records]
        finally:
            connection.close()

    def take_email_queue(self) -> list[tuple[bytes, pika.BasicProperties]]:
        connection, channel = self._channel()
        taken: list[tuple[bytes, pika.BasicProperties]] = []
        try:
            while True:
                method, properties, payload = channel.basic_get(self.settings.email_queue, True)
                if method is None:
                    return taken
                taken.append((payload, properties))
        finally:
            connection.close()

    def cleanup(self) -> None:
        connection, channel = self._channel()
        try:
            for name in (
                self.settings.email_queue,
                self.settings.failed_queue,
                self.settings.retry_queue_name(60),
                f"{self.settings.email_queue}.bulk",  # the priority lane
            ):
                channel.queue_delete(name)
            channel.exchange_delete(self.settings.exchange)
        finally:
            connection.close()


def body(request_id: str) -> bytes:
    return json.dumps({"request_id": request_id, "template_code": "welcome"}).encode()


@pytest.fixture
def broker(amqp_url: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    made = Broker(amqp_url, unique_prefix)
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """``cli.main`` points the root logger at this test's captured stdout, which is closed after
    the test: put back what was there, or every later test's log lines go to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def dlq(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["dlq", *args])
    out, err = capsys.readouterr()
    return code, out, err


SEEDED = [
    ("a", "template_not_found"),
    ("b", "recipient_invalid"),
    ("c", "template_not_found"),
    ("d", "recipient_invalid"),
    ("e", "template_not_found"),
]


def test_list_shows_records_in_order_filters_and_never_disturbs_them(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(*SEEDED)

    code, out, _ = dlq(capsys, "list")
    assert code == 0
    assert [line.split("\t")[:4] for line in out.splitlines()] == [
        [str(n), rid, reason, "1"] for n, (rid, reason) in enumerate(SEEDED, 1)
    ]
    code, out, _ = dlq(capsys, "list", "--json", "--reason", "recipient_invalid")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["position"], r["request_id"], r["failed_at"]) for r in rows] == [
        (2, "b", "2026-11-23T10:00:01Z"),  # positions in the queue, whatever the filter hides
        (4, "d", "2026-11-23T10:00:01Z"),
    ]
    assert dlq(capsys, "list", "--limit", "2")[1].count("\n") == 2
    assert broker.dead_ids() == ["a", "b", "c", "d", "e"]  # nothing lost or reordered


def test_show_prints_headers_and_the_original_body(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(*SEEDED[:2])

    code, out, _ = dlq(capsys, "show", "b")
    document = json.loads(out)
    assert code == 0
    assert document["body"].encode() == body("b")
    assert document["headers"]["failure_reason"] == "recipient_invalid"
    assert document["headers"]["x-death"][0]["queue"] == "email.queue"
    assert document["properties"]["correlation_id"] == "corr-b"

    code, out, err = dlq(capsys, "show", "nope")
    assert code == 1 and out == ""
    assert "no record with id 'nope'" in err
    assert broker.dead_ids() == ["a", "b"]


def _publish_raw(broker: Broker, payload: bytes, headers: dict[str, Any], **props: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        properties = pika.BasicProperties(delivery_mode=2, headers=headers, **props)
        connection.channel().basic_publish("", broker.settings.failed_queue, payload, properties)
    finally:
        connection.close()


INVALID_HEADERS = {
    "failure_reason": "invalid_message",
    "failure_detail": "template_code: missing",
    "attempts": 1,
    "first_attempt_at": "2026-11-23T10:00:00Z",
    "failed_at": "2026-11-23T10:00:01Z",
}


def test_show_finds_records_by_notification_id_message_id_or_position(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(("a", "template_not_found"))
    # A NestJS-shaped invalid message: no request_id at all, a camelCase notificationId.
    nestjs = b'{"pattern": "email", "data": {"notificationId": "notif-9", "to": "x@example.com"}}'
    _publish_raw(broker, nestjs, INVALID_HEADERS, message_id="amqp-9")
    _publish_raw(broker, b"\xff not json", INVALID_HEADERS | {"failure_reason": "invalid_json"})
    broker.seed(("b", "recipient_invalid"))

    code, out, _ = dlq(capsys, "list")
    assert [line.split("\t")[:3] for line in out.splitlines()] == [
        ["1", "a", "template_not_found"],
        ["2", "-", "invalid_message"],
        ["3", "-", "invalid_json"],
        ["4", "b", "recipient_invalid"],
    ]
    for key, matched in (("notif-9", ["notification_id"]), ("amqp-9", ["message_id"])):
        code, out, _ = dlq(capsys, "show", key)
        document = json.loads(out)
        assert code == 0
        assert document["body"].encode() == nestjs
        assert (document["position"], document["matched_by"]) == (2, matched)
        assert document["properties"]["message_id"] == "amqp-9"
    code, out, _ = dlq(capsys, "show", "--position", "3")
    document = json.loads(out)
    assert (code, document["body_base64"], document["position"]) == (0, "/yBub3QganNvbg==", 3)
    assert "matched_by" not in document
    code, out, _ = dlq(capsys, "show", "b")
    assert json.loads(out)["matched_by"] == ["request_id"]

    code, out, err = dlq(capsys, "show", "--position", "5")
    assert (code, out) == (1, "") and "no record at position 5" in err
    assert broker.dead_ids() == ["a", None, None, "b"]  # nothing lost or reordered


@pytest.mark.parametrize("args", [(), ("a", "--position", "1")])
def test_show_needs_exactly_one_way_to_find_a_record(
    broker: Broker, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, _, err = dlq(capsys, "show", *args)
    assert code == 2
    assert "give one ID (request_id, notification_id or message_id) or --position N" in err
    with pytest.raises(SystemExit) as refused:  # argparse: positions start at 1
        dlq(capsys, "show", "--position", "0")
    assert refused.value.code == 2


def test_replay_by_reason_republishes_originals_and_leaves_the_rest_in_order(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(*SEEDED)

    code, out, _ = dlq(capsys, "replay", "--reason", "template_not_found")

    assert code == 0 and "replayed 3 record(s)" in out
    replayed = broker.take_email_queue()
    assert [payload for payload, _ in replayed] == [body("a"), body("c"), body("e")]
    for _, properties in replayed:
        headers = properties.headers or {}
        assert not DEAD_LETTER_NAMES & set(headers)
        assert not any(name.startswith("x-") and name != "x-trace" for name in headers)
        assert headers["x-trace"] == "kept"
        assert properties.content_type == "application/json"
        assert properties.correlation_id is not None and properties.correlation_id[:5] == "corr-"
    assert broker.dead_ids() == ["b", "d"]


def test_replay_by_request_id_and_limit(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    broker.seed(*SEEDED)

    assert "replayed 1 record(s)" in dlq(capsys, "replay", "--request-id", "d")[1]
    assert broker.dead_ids() == ["a", "b", "c", "e"]
    assert "replayed 2 record(s)" in dlq(capsys, "replay", "--all", "--limit", "2")[1]
    assert broker.dead_ids() == ["c", "e"]
    assert [p for p, _ in broker.take_email_queue()] == [body("d"), body("a"), body("b")]


def test_replay_dry_run_changes_nothing_and_a_selector_is_required(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(*SEEDED)

    code, out, _ = dlq(capsys, "replay", "--reason", "recipient_invalid", "--dry-run")
    assert code == 0 and "would replay 2 record(s)" in out
    assert [line.split("\t")[:2] for line in out.splitlines()[:2]] == [["2", "b"], ["4", "d"]]
    code, _, err = dlq(capsys, "replay")
    assert code == 2 and "--reason CODE, --request-id ID or --all" in err
    assert dlq(capsys, "replay", "--all", "--reason", "x")[0] == 2
    assert broker.take_email_queue() == []
    assert broker.dead_ids() == ["a", "b", "c", "d", "e"]


def test_replay_rate_spaces_the_publishes(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.seed(*SEEDED)

    started = time.monotonic()
    code, out, _ = dlq(capsys, "replay", "--all", "--rate", "10")
    elapsed = time.monotonic() - started

    assert code == 0 and "replayed 5 record(s)" in out
    assert elapsed >= 0.39  # 5 publishes at 10/s: the 5th leaves 0.4 s after the 1st
    assert len(broker.take_email_queue()) == 5


def test_an_unconfirmed_replay_stops_and_keeps_the_record(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.seed(*SEEDED[:2])
    monkeypatch.setenv("EMAIL_WORKER_ROUTING_KEYS", "routes-nowhere")  # mandatory: unroutable

    code, out, err = dlq(capsys, "replay", "--all")

    assert code == 1 and "unroutable" in err
    assert "replayed 0 record(s)" in out
    assert broker.dead_ids() == ["a", "b"]


def test_export_writes_every_record_and_leaves_the_queue(
    broker: Broker, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broker.seed(*SEEDED)
    target = tmp_path / "dlq.jsonl"

    code, out, _ = dlq(capsys, "export", str(target), "--state-dir", str(tmp_path / "state"))

    assert code == 0 and "exported 5 record(s)" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    lines = target.read_text(encoding="utf-8").splitlines()
    parsed = [parse_export_line(line) for line in lines]
    assert [payload for payload, _ in parsed] == [body(rid) for rid, _ in SEEDED]
    headers = parsed[1][1].headers
    assert headers["failure_reason"] == "recipient_invalid" and headers["request_id"] == "b"
    assert parsed[1][1].correlation_id == "corr-b"
    marker = json.loads((tmp_path / "dlq.jsonl.meta.json").read_text())
    assert marker["records"] == 5 and marker["newest_failed_at"] == "2026-11-23T10:00:01Z"
    state = json.loads((tmp_path / "state" / "dlq-exports.json").read_text())
    (entry,) = state.values()
    assert entry["records"] == 5 and len(entry["digests"]) == 5
    assert broker.dead_ids() == ["a", "b", "c", "d", "e"]


def test_purge_refuses_without_a_covering_export_then_purges(
    broker: Broker, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broker.seed(*SEEDED[:3])
    state = ("--state-dir", str(tmp_path))

    code, _, err = dlq(capsys, "purge", "--force")
    assert code == 2 and "--yes" in err
    code, _, err = dlq(capsys, "purge", "--yes", *state)
    assert code == 2 and "no export" in err
    dlq(capsys, "export", str(tmp_path / "one.jsonl"), *state)
    broker.seed(("late", "opted_out"))
    code, _, err = dlq(capsys, "purge", "--yes", *state)
    assert code == 2 and "1 of 4 record(s) are not in the last export" in err
    assert broker.dead_ids() == ["a", "b", "c", "late"]

    dlq(capsys, "export", str(tmp_path / "two.jsonl"), *state)
    code, out, _ = dlq(capsys, "purge", "--yes", *state)
    assert code == 0 and "purged 4 record(s)" in out
    assert broker.dead_ids() == []


def test_purge_force_removes_everything_without_an_export(
    broker: Broker, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broker.seed(*SEEDED)
    code, out, _ = dlq(capsys, "purge", "--yes", "--force", "--state-dir", str(tmp_path))
    assert code == 0 and "purged 5 record(s)" in out
    assert broker.dead_ids() == []


def test_a_missing_queue_is_reported_not_created(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_WORKER_FAILED_QUEUE", f"absent-{uuid.uuid4().hex}")
    code, _, err = dlq(capsys, "list")
    assert code == 1 and "NOT_FOUND" in err


def run_cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.environment(), "XDG_STATE_HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "email_worker", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_template_then_replay_sends_exactly_once(stack: Stack, tmp_path: Path) -> None:
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    message = {
        "request_id": request_id,
        "template_code": "late",
        "to_email": "late@example.com",
        "variables": {"name": "Ada", "link": "l"},
    }
    stack.start_worker()
    stack.publish(message)  # the template service answers 404: dead-lettered
    assert stack.dead_letter(request_id).headers.failure_reason == "template_not_found"
    wait_for(lambda: [c["status"] for c in stack.callbacks(request_id)] == ["failed"])
    assert stack.status(request_id) == "failed"
    exported = run_cli(stack, tmp_path, "export", str(tmp_path / "before.jsonl"))
    assert exported.returncode == 0, exported.stderr

    stack.http.route("GET", "/api/v1/templates/late", Reply(200, {"data": TEMPLATE}))
    done = run_cli(stack, tmp_path, "replay", "--reason", "template_not_found")

    assert done.returncode == 0, done.stderr
    assert "replayed 1 record(s)" in done.stdout
    wait_for(lambda: stack.status(request_id) == "sent", what="the replayed message to be sent")
    wait_for(lambda: [c["status"] for c in stack.callbacks(request_id)][-1:] == ["delivered"])
    assert len(stack.emails_to("late@example.com")) == 1
    assert stack.dead_letters() == []

    # A copy that somehow remained (re-injected from the export) is replayed: nothing is sent.
    payload, properties = parse_export_line((tmp_path / "before.jsonl").read_text())
    stack.publish(
        payload,
        exchange="",
        routing_key=f"{stack.prefix}.failed.queue",
        headers=properties.headers,
    )
    again = run_cli(stack, tmp_path, "replay", "--request-id", request_id)
    assert "replayed 1 record(s)" in again.stdout, again.stderr
    wait_for(stack.idle, 10, "the queues to drain")
    assert len(stack.emails_to("late@example.com")) == 1
    assert stack.status(request_id) == "sent"
    assert stack.dead_letters() == []


def test_a_dead_letter_without_request_id_is_found_by_its_notification_id(
    stack: Stack, tmp_path: Path
) -> None:
    notification_id = f"notif-{uuid.uuid4().hex[:12]}"
    stack.start_worker()
    # NestJS-style, camelCase, and no request_id at all: refused as invalid_message.
    body = {"pattern": "email", "data": {"notificationId": notification_id, "to": "n@example.com"}}
    stack.publish(body, message_id=f"amqp-{notification_id}")
    record = stack.dead_letter(None)
    assert record.headers.failure_reason == "invalid_message"

    for key in (notification_id, f"amqp-{notification_id}"):
        shown = run_cli(stack, tmp_path, "show", key)
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        assert json.loads(document["body"]) == body
        assert document["headers"]["failure_reason"] == "invalid_message"
    listed = run_cli(stack, tmp_path, "list").stdout.splitlines()
    assert [line.split("\t")[:3] for line in listed] == [["1", "-", "invalid_message"]]
    assert json.loads(run_cli(stack, tmp_path, "show", "--position", "1").stdout)["body"]
