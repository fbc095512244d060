"""Adopting what gateways declared, ``topology show|apply`` and passive mode, on the real
broker (RabbitMQ 3.10): each test uses its own prefix (see tests/support/stack.py)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from email_worker.app import declare_topology
from email_worker.broker.probe import Channels, QueueFound, learn_queue, queue_found
from email_worker.broker.topology import TopologyError
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

GATEWAY_ARGUMENTS = {"x-max-priority": 10, "x-message-ttl": 3_600_000, "x-max-length": 10_000}


@contextmanager
def channel(stack: Stack) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def gateway_declares(stack: Stack, name: str, arguments: dict[str, Any] | None = None) -> None:
    """What a gateway does at its own start-up: an active declare of ITS declaration."""
    with channel(stack) as ch:
        ch.queue_declare(name, durable=True, arguments=arguments)


def delete_queue(stack: Stack, name: str) -> None:
    with channel(stack) as ch:
        ch.queue_delete(name)


def exists(stack: Stack, name: str) -> bool:
    with channel(stack) as ch:
        try:
            ch.queue_declare(name, passive=True)
        except ChannelClosedByBroker:
            return False
        return True


def probe(stack: Stack, name: str) -> QueueFound:
    channels = Channels(lambda: pika.BlockingConnection(pika.URLParameters(stack.amqp_url)))
    try:
        return queue_found(channels, name)
    finally:
        channels.close()


def start_up_line(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    (record,) = [r for r in caplog.records if r.getMessage() == "topology"]
    line: list[dict[str, Any]] = record.__dict__["topology"]  # the extra of the log line
    return line


def entry(line: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in line if item["name"] == name)


def message(request_id: str, address: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com"},
    }


@pytest.mark.parametrize(
    "arguments", [GATEWAY_ARGUMENTS, None], ids=["priority-ttl-length", "plain-durable"]
)
def test_a_queue_the_gateway_declared_first_is_adopted_as_it_is(
    stack: Stack, arguments: dict[str, Any] | None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = stack.settings()
    delete_queue(stack, settings.email_queue)
    gateway_declares(stack, settings.email_queue, arguments)
    caplog.set_level(logging.INFO, logger="email_worker")

    worker = stack.start_worker()  # used to exit 3 on the 406

    found = entry(start_up_line(caplog), settings.email_queue)
    assert found["status"] == "adopted"
    assert found["found"] == {
        "type": "classic",
        "durable": True,
        "auto_delete": False,
        "arguments": arguments or {},
    }
    assert "type: found classic, wanted quorum" in found["differs"]
    assert "x-delivery-limit: found none, wanted 10" in found["differs"]
    assert probe(stack, settings.email_queue).arguments == (arguments or {})  # unchanged
    gateway_declares(stack, settings.email_queue, arguments)  # the gateway restarts: no 406
    request_id = f"adopt-{uuid.uuid4().hex[:8]}"
    stack.publish(message(request_id, "adopt@example.com"), priority=5)
    wait_for(lambda: stack.status(request_id) == "sent", 20, "delivery through the queue")
    assert worker.consumer.consuming


def test_a_gateway_asserting_a_plain_queue_after_the_worker_made_it(stack: Stack) -> None:
    settings = stack.settings()
    delete_queue(stack, settings.email_queue)
    declare_topology(stack.settings())  # the default: a quorum queue with the worker's arguments
    with pytest.raises(ChannelClosedByBroker) as refused:
        gateway_declares(stack, settings.email_queue)  # what NestJS ClientRMQ asserts
    assert refused.value.reply_code == 406  # why QUEUE_ARGUMENTS exists

    delete_queue(stack, settings.email_queue)
    declare_topology(stack.settings(queue_type="classic", queue_arguments={}))
    gateway_declares(stack, settings.email_queue)  # the NestJS gateway starts: no 406
    assert probe(stack, settings.email_queue).arguments == {}
    priority = stack.settings(queue_type="classic", queue_arguments={"x-max-priority": 10})
    delete_queue(stack, settings.email_queue)
    declare_topology(priority)
    gateway_declares(stack, settings.email_queue, {"x-max-priority": 10})  # the aio-pika gateway


def test_the_probe_reads_arguments_and_never_creates_a_queue(stack: Stack) -> None:
    name = f"{stack.prefix}.probed"
    stack.queues.add(name)
    args = {"x-queue-type": "quorum", "x-delivery-limit": 3, "x-single-active-consumer": True}
    gateway_declares(stack, name, args)
    assert probe(stack, name) == QueueFound(name, True, args)
    delete_queue(stack, name)
    channels = Channels(lambda: pika.BlockingConnection(pika.URLParameters(stack.amqp_url)))
    try:  # as if the queue vanished between the passive check and the probe
        vanished = learn_queue(channels, QueueFound(name, True))
    finally:
        channels.close()
    assert not vanished.complete and "invalid arg" in vanished.note
    assert not exists(stack, name)


def run_cli(stack: Stack, tmp_path: Path, *args: str, **overrides: Any) -> tuple[int, str]:
    log = tmp_path / f"cli-{uuid.uuid4().hex[:6]}.log"
    with stack.spawn("topology", *args, log=log, **overrides) as process:
        code = process.wait(60)
    return code, log.read_text()


def test_topology_show_marks_each_piece_and_exits_1_while_something_is_missing(
    stack: Stack, tmp_path: Path
) -> None:
    settings = stack.settings()
    retry = settings.retry_queue_name(settings.retry_delays[0])
    delete_queue(stack, settings.email_queue)
    gateway_declares(stack, settings.email_queue, {"x-max-priority": 10})
    delete_queue(stack, retry)

    code, text = run_cli(stack, tmp_path, "show")
    assert code == 1
    lines = {line.split(" (")[0].split(":")[0]: line for line in text.splitlines()}
    assert lines[f"queue {retry}"].endswith(": missing")
    assert "adopted (differs: " in lines[f"queue {settings.email_queue}"]
    assert "x-max-priority: found 10, wanted none" in lines[f"queue {settings.email_queue}"]
    assert lines[f"queue {settings.failed_queue}"].endswith(": ok")
    assert lines[f"queue {settings.lane_queue}"].endswith(": ok")  # the priority lane
    assert lines[f"exchange {settings.exchange}"].endswith(": ok")
    assert not exists(stack, retry)  # show changed nothing

    code, text = run_cli(stack, tmp_path, "show", "--json")
    document = json.loads(text[text.index("{") :])
    assert code == 1 and document["ok"] is False
    statuses = {item["name"]: item["status"] for item in document["items"]}
    assert statuses[retry] == "missing" and statuses[settings.email_queue] == "adopted"

    assert run_cli(stack, tmp_path, "apply")[0] == 0
    code, text = run_cli(stack, tmp_path, "show")
    assert code == 0 and ": missing" not in text


def test_topology_apply_is_idempotent_and_changes_nothing_that_exists(
    stack: Stack, tmp_path: Path
) -> None:
    settings = stack.settings()
    delete_queue(stack, settings.email_queue)
    gateway_declares(stack, settings.email_queue, GATEWAY_ARGUMENTS)
    stack.publish(b"{}", exchange="", routing_key=settings.email_queue)  # a message waiting
    delete_queue(stack, settings.failed_queue)

    first, text = run_cli(stack, tmp_path, "apply")
    assert first == 0
    assert f"queue {settings.failed_queue} (classic) {{}}: created" in text
    second, text = run_cli(stack, tmp_path, "apply")
    assert second == 0 and "created" not in text
    found = probe(stack, settings.email_queue)
    assert found.arguments == GATEWAY_ARGUMENTS and found.queue_type == "classic"
    assert stack.queued() == 1  # the gateway's message is still there
    gateway_declares(stack, settings.email_queue, GATEWAY_ARGUMENTS)


def test_passive_mode_lists_every_missing_piece_in_one_error(stack: Stack) -> None:
    settings = stack.settings(passive_topology=True)
    retry = settings.retry_queue_name(settings.retry_delays[1])
    with channel(stack) as ch:
        ch.exchange_delete(settings.exchange)
    delete_queue(stack, settings.failed_queue)
    delete_queue(stack, retry)

    with pytest.raises(TopologyError) as error:
        declare_topology(settings)

    text = str(error.value)
    # The exchange, its three bindings (email.queue's two, failed.queue's), two queues.
    assert "6 missing piece(s)" in text
    assert f"rabbitmqadmin declare exchange name={settings.exchange} type=direct" in text
    assert f"rabbitmqadmin declare queue name={settings.failed_queue} durable=true" in text
    assert f"name={retry} durable=true" in text and '"x-dead-letter-exchange": ""' in text
    assert f"destination={settings.failed_queue} routing_key=failed" in text
    assert "Bindings cannot be read over AMQP" in text
    assert not exists(stack, retry)  # passive mode declared nothing
    declare_topology(stack.settings())  # back to what cleanup expects


def test_an_old_retry_queue_is_adopted_with_a_migration_warning(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = stack.settings()
    retry = settings.retry_queue_name(settings.retry_delays[0])
    delete_queue(stack, retry)
    old = {
        "x-message-ttl": 300,
        "x-dead-letter-exchange": settings.exchange,
        "x-dead-letter-routing-key": "email",
    }
    gateway_declares(stack, retry, old)  # as an older worker declared it
    caplog.set_level(logging.INFO, logger="email_worker")

    declare_topology(settings)

    assert entry(start_up_line(caplog), retry)["status"] == "adopted"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(retry in w and "rabbitmqctl delete_queue" in w for w in warnings)
    assert probe(stack, retry).arguments == old
