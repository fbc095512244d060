"""What the worker would declare, how an existing queue compares with it, and how the findings
read (pure: the broker side is in tests/integration/test_topology*.py)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from pydantic import ValidationError

from email_worker.broker.probe import QueueFound
from email_worker.broker.report import lines, mark, missing_message, rabbitmqadmin
from email_worker.broker.survey import Finding, Status, differences, queue_finding
from email_worker.broker.topology import QueueSpec, Topology
from email_worker.config import Settings


def topology(**overrides: Any) -> Topology:
    return Topology.from_settings(Settings(retry_delays=[5, 30], **overrides))


def spec(top: Topology, role: str) -> QueueSpec:
    return next(q for q in top.queues() if q.role == role)


def test_default_email_queue_is_quorum_with_a_delivery_limit_and_dead_letter_route() -> None:
    assert topology().email_queue_arguments() == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 10,
        "x-dead-letter-exchange": "notifications.direct",
        "x-dead-letter-routing-key": "failed",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@pytest.mark.parametrize(
    ("queue_type", "given", "declared"),
    [
        ("classic", {}, {}),  # the plain durable queue NestJS ClientRMQ asserts
        ("quorum", {}, {"x-queue-type": "quorum"}),
        ("classic", {"x-max-priority": 10}, {"x-max-priority": 10}),
        ("quorum", {"x-max-length": 5}, {"x-max-length": 5, "x-queue-type": "quorum"}),
    ],
)
def test_queue_arguments_are_declared_exactly(
    queue_type: str, given: dict[str, Any], declared: dict[str, Any]
) -> None:
    top = topology(queue_type=queue_type, queue_arguments=given)
    assert top.email_queue_arguments() == declared
    assert spec(top, "email").queue_type == queue_type


def test_the_priority_lane_is_the_worker_own_queue_named_after_the_email_queue() -> None:
    top = topology(email_queue="x.email.queue", queue_type="classic", queue_arguments={})
    lane = spec(top, "lane")
    assert lane.name == "x.email.queue.bulk" and lane.routing_keys == ()
    # QUEUE_ARGUMENTS fit the gateway's email.queue; the lane gets the worker's own defaults.
    assert lane.arguments == topology().email_queue_arguments()
    classic = spec(topology(priority_lane_queue_type="classic"), "lane")
    assert classic.queue_type == "classic" and "x-delivery-limit" not in classic.arguments
    assert spec(topology(priority_lane_queue="lanes.bulk"), "lane").name == "lanes.bulk"
    assert "lane" not in {q.role for q in topology(priority_lane_queue="").queues()}


@pytest.mark.parametrize("retry_type", ["quorum", "classic"])
def test_retry_queues_expire_back_by_name_through_the_default_exchange(retry_type: str) -> None:
    top = topology(retry_queue_type=retry_type)
    arguments = top.retry_queue_arguments(30)
    assert arguments["x-message-ttl"] == 30_000
    assert arguments["x-dead-letter-exchange"] == ""
    assert arguments["x-dead-letter-routing-key"] == "email.queue"
    quorum = {"x-queue-type", "x-dead-letter-strategy", "x-overflow"} <= set(arguments)
    assert quorum == (retry_type == "quorum")
    if quorum:
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"  # at-least-once needs it


@pytest.mark.parametrize(
    "value",
    ['{"x-max-priority": 1.5}', '{"x-queue-type": "classic"}', "[1]", '{"a": null}'],
)
def test_bad_queue_arguments_stop_start_up(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_WORKER_QUEUE_ARGUMENTS", value)
    with pytest.raises(ValidationError, match="queue_arguments"):
        Settings()


def test_queue_arguments_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_WORKER_QUEUE_ARGUMENTS", '{"x-max-priority": 10, "x-lazy": true}')
    monkeypatch.setenv("EMAIL_WORKER_RETRY_QUEUE_TYPE", "classic")
    settings = Settings()
    assert settings.queue_arguments == {"x-max-priority": 10, "x-lazy": True}
    assert settings.retry_queue_type == "classic"


def test_a_gateway_queue_differs_in_type_and_arguments() -> None:
    top = topology()
    found = QueueFound("email.queue", True, {"x-max-priority": 10, "x-message-ttl": 60000})
    differs = differences(spec(top, "email"), found)
    assert "type: found classic, wanted quorum" in differs
    assert "x-max-priority: found 10, wanted none" in differs
    assert "x-delivery-limit: found none, wanted 10" in differs
    assert all("x-queue-type" not in phrase for phrase in differs)


def test_an_identical_queue_is_ok_and_a_partly_read_one_says_so() -> None:
    top = topology()
    email = spec(top, "email")
    same = QueueFound(email.name, True, dict(email.arguments))
    assert differences(email, same) == ()
    partial = QueueFound(email.name, True, {}, complete=False, note="ACCESS_REFUSED")
    assert differences(email, partial) == ("not fully read (ACCESS_REFUSED)",)


def test_an_old_retry_queue_is_adopted_with_a_warning_that_says_how_to_migrate() -> None:
    top = topology()
    retry = spec(top, "retry")
    old = {"x-message-ttl": 5000, "x-dead-letter-exchange": "notifications.direct"}
    old["x-dead-letter-routing-key"] = "email"
    finding = queue_finding(retry, QueueFound(retry.name, True, old), top)
    assert finding.status == Status.ADOPTED
    (warning,) = finding.warnings
    assert "notifications.direct" in warning and "classic" in warning
    assert f"rabbitmqctl delete_queue {retry.name} --if-empty" in warning


def test_a_retry_queue_without_a_dead_letter_route_warns_of_dropped_copies() -> None:
    top = topology(retry_queue_type="classic")
    retry = spec(top, "retry")
    finding = queue_finding(retry, QueueFound(retry.name, True, {"x-message-ttl": 5000}), top)
    assert "DROPPED" in finding.warnings[0]


def test_a_lossy_dead_letter_queue_warns() -> None:
    top = topology()
    failed = spec(top, "failed")
    finding = queue_finding(failed, QueueFound(failed.name, True, {"x-message-ttl": 1}), top)
    assert "x-message-ttl" in finding.warnings[0]
    quiet = queue_finding(failed, QueueFound(failed.name, True, {}), top)
    assert quiet.status == Status.OK and quiet.warnings == ()


def test_every_missing_piece_is_listed_with_its_declaration() -> None:
    missing = [
        Finding("exchange", "notifications.direct", Status.MISSING, {"type": "direct"}),
        Finding(
            "queue",
            "failed queue",
            Status.MISSING,
            {"type": "classic", "durable": True, "arguments": {}},
        ),
        Finding(
            "binding",
            "notifications.direct -> email.queue (email)",
            Status.MISSING,
            {"source": "notifications.direct", "destination": "email.queue", "routing_key": "k"},
        ),
    ]
    message = missing_message(missing)
    assert "3 missing piece(s)" in message
    for finding in missing:
        assert rabbitmqadmin(finding) in message
    assert shlex.split(rabbitmqadmin(missing[1]))[2:] == [
        "queue",
        "name=failed queue",
        "durable=true",
        "arguments={}",
    ]
    assert "topology apply" in message and "EMAIL_WORKER_PASSIVE_TOPOLOGY" in message


def test_show_marks_each_piece() -> None:
    adopted = Finding("queue", "q", Status.ADOPTED, {"arguments": {}}, differs=("a", "b"))
    assert mark(adopted) == "adopted (differs: a; b)"
    assert mark(Finding("exchange", "x", Status.MISSING, {})) == "missing"
    shown = lines([adopted, Finding("queue", "w", Status.OK, {}, warnings=("careful",))])
    assert shown[-1] == "WARNING: careful"
    assert shown[0].endswith("adopted (differs: a; b)")
