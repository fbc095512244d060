"""Replay's pure parts: which records match, what a replayed copy carries, the pacing, and the
command-line refusals that happen before the broker is touched."""

from __future__ import annotations

import pika
import pytest

from email_worker import cli
from email_worker.dlq.records import DeadLetterRecord
from email_worker.dlq.replay import Pacer, Selector, replay_properties
from schemas.deadletter import DeadLetterHeaders


def record(reason: str, request_id: str | None) -> DeadLetterRecord:
    headers = DeadLetterHeaders(
        failure_reason=reason, attempts=1, first_attempt_at="", failed_at="", request_id=request_id
    )
    return DeadLetterRecord(headers, b"{}", pika.BasicProperties())


@pytest.mark.parametrize(
    ("selector", "reason", "request_id", "matches"),
    [
        (Selector(), "opted_out", "r1", True),
        (Selector(reason="opted_out"), "opted_out", "r1", True),
        (Selector(reason="opted_out"), "too_large", "r1", False),
        (Selector(request_id="r1"), "too_large", "r1", True),
        (Selector(request_id="r1"), "too_large", None, False),
        (Selector("opted_out", "r1"), "opted_out", "r2", False),
        (Selector("opted_out", "r1"), "opted_out", "r1", True),
    ],
)
def test_selector(selector: Selector, reason: str, request_id: str | None, matches: bool) -> None:
    assert selector.matches(record(reason, request_id)) is matches


def test_replayed_copy_drops_dead_letter_and_broker_headers_only() -> None:
    headers = {
        **DeadLetterHeaders(
            failure_reason="template_not_found",
            attempts=2,
            first_attempt_at="a",
            failed_at="b",
            request_id="r",
        ).to_amqp(),
        "x-death": [{"count": 1}],
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "email.queue",
        "x-last-death-reason": "rejected",
        "x-delivery-count": 3,
        "x-tenant": "acme",
        "traceparent": "00-abc",
    }
    original = pika.BasicProperties(
        content_type="application/json",
        correlation_id="c",
        message_id="m",
        priority=4,
        app_id="gateway",
        delivery_mode=2,
        headers=headers,
    )

    copy = replay_properties(original)

    assert copy.headers == {"x-tenant": "acme", "traceparent": "00-abc"}
    assert (copy.content_type, copy.correlation_id, copy.message_id) == (
        "application/json",
        "c",
        "m",
    )
    assert (copy.priority, copy.app_id, copy.delivery_mode) == (4, "gateway", 2)
    assert original.headers["failure_reason"] == "template_not_found"  # not mutated


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_spaces_calls_by_the_rate() -> None:
    fake = FakeTime()
    pacer = Pacer(10, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        pacer.wait()
    assert fake.slept == pytest.approx([0.1] * 4)
    fake.now += 1.0  # a slow publish uses up the interval: no sleep
    pacer.wait()
    assert len(fake.slept) == 4


def test_pacer_without_a_rate_never_sleeps() -> None:
    fake = FakeTime()
    pacer = Pacer(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        pacer.wait()
    assert fake.slept == []
    with pytest.raises(ValueError):
        Pacer(0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay"], "--reason CODE, --request-id ID or --all"),
        (["replay", "--all", "--request-id", "r"], "cannot be combined"),
        (["purge"], "confirm with --yes"),
        (["purge", "--force"], "confirm with --yes"),
    ],
)
def test_refusals_exit_2_before_touching_the_broker(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_WORKER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    assert cli.main(["dlq", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["replay", "--all", "--rate", "0"], ["list", "--limit", "-1"]])
def test_non_positive_numbers_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["dlq", *argv])
    assert exited.value.code == 2
