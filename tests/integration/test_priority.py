"""Priority behind a real backlog (CONTRACT section 13), on RabbitMQ, Postgres and an SMTP server
that accepts at most ``RATE`` messages a second (it paces its replies: a behaviour of the relay,
not a synchronisation of the test): a high-priority message published behind 1,500 bulk ones is
sent within seconds, on the default quorum ``email.queue`` (no broker priorities), on a
gateway's classic ``x-max-priority`` queue and while ``RATE_LIMIT`` sets the pace; one priority
keeps its order with one worker thread; without a lane nothing moves, and neither does a backlog
sent within ``PRIORITY_LANE_SECONDS``; a ``kill -9`` while messages move to the lane loses
nothing. Figures are printed (``-s``)."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Any

import pika
import pytest

from email_worker.app import Worker, declare_topology
from tests.support.ledger_check import KEY_HEADER, LedgerCheck, Request
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

RATE = 50  # messages a second the relay accepts
BULK = 1500


def bulk(check: LedgerCheck, prefix: str, count: int, priority: int | None = 1) -> list[str]:
    keys = []
    for n in range(count):
        key = f"{prefix}-{n:05d}-{uuid.uuid4().hex[:4]}"
        body: dict[str, Any] = {
            "request_id": key,
            "template_code": "welcome",
            "to_email": f"{key}@example.com",
            "variables": {"name": "Ada", "link": "https://example.com/x"},
        }
        if priority is not None:
            body["priority"] = priority
        check.add(key, body=body)
        keys.append(key)
    return keys


def publish_urgent(stack: Stack, check: LedgerCheck, *, body_priority: int | None) -> str:
    """One password reset: priority 9 as the AMQP property (and in the body when given)."""
    key = f"urgent-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"request_id": key, "template_code": "welcome"}
    body |= {"to_email": f"{key}@example.com", "variables": {"name": "Ada", "link": "x"}}
    if body_priority is not None:
        body["priority"] = body_priority
    check.requests.append(Request(key, f"{key}@example.com"))
    stack.publish(body, priority=9, headers={KEY_HEADER: key})
    return key


def accepted(stack: Stack) -> list[tuple[str, float]]:
    """(recipient, when) of every message the relay accepted, in the order it accepted them."""
    return [(m.rcpt_tos[0], m.received_at) for m in stack.smtp.messages if not m.ambiguous]


def moves(worker: Worker, result: str = "moved") -> float:
    value = worker.metrics.registry.get_sample_value(
        "email_worker_lane_moves_total", {"result": result}
    )
    return value or 0.0


def gateway_priority_queue(stack: Stack) -> None:
    """What an aio-pika gateway declares before the worker starts."""
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        arguments = {"x-max-priority": 10}
        connection.channel().queue_declare(
            stack.settings().email_queue, durable=True, arguments=arguments
        )
    finally:
        connection.close()


@pytest.mark.parametrize("queue", ["default-quorum", "gateway-x-max-priority"])
def test_a_high_priority_message_overtakes_a_backlog_of_bulk(bare_stack: Stack, queue: str) -> None:
    stack = bare_stack
    if queue == "gateway-x-max-priority":
        gateway_priority_queue(stack)
    declare_topology(stack.settings())  # adopts the gateway's queue as it is
    stack.smtp.reply_rate = RATE
    check = stack.ledger_check()
    bulk(check, "bulk", BULK)
    check.publish()  # 1,500 bulk messages wait in email.queue

    worker = stack.start_worker()
    published = time.time()
    # On the gateway's queue the priority is in the AMQP property only: the broker orders by it.
    urgent = publish_urgent(stack, check, body_priority=None if "gateway" in queue else 9)
    wait_for(lambda: stack.status(urgent) == "sent", 30, "the urgent message")

    order = [rcpt for rcpt, _ in accepted(stack)]
    position = order.index(f"{urgent}@example.com") + 1
    latency = dict(accepted(stack))[f"{urgent}@example.com"] - published
    print(
        f"MEASURED priority {queue}: sent {latency:.2f} s after its publish behind {BULK} bulk, "
        f"{position}th accepted, {moves(worker):.0f} moved to the lane so far"
    )
    assert position <= 100  # two seconds of the relay's pace (30 s, 1,501st, without the lane)
    assert latency < 10
    assert moves(worker) > 0 and moves(worker, "failed") == 0

    stack.smtp.reply_rate = None  # the rest as fast as the relay goes: all delivered once
    report = stack.settle_and_check(check, 120)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == BULK + 1, report.summary()


def test_a_high_priority_message_overtakes_bulk_while_the_rate_limit_holds_back(
    stack: Stack,
) -> None:
    check = stack.ledger_check()
    bulk(check, "limited", BULK)
    check.publish()
    worker = stack.start_worker(rate_limit=RATE)  # RATE_LIMIT, not the relay, sets the pace
    published = time.time()
    urgent = publish_urgent(stack, check, body_priority=9)
    wait_for(lambda: stack.status(urgent) == "sent", 30, "the urgent message")

    order = [rcpt for rcpt, _ in accepted(stack)]
    position = order.index(f"{urgent}@example.com") + 1
    latency = dict(accepted(stack))[f"{urgent}@example.com"] - published
    print(
        f"MEASURED priority under RATE_LIMIT={RATE}: sent {latency:.2f} s after its publish "
        f"behind {BULK} bulk, {position}th accepted"
    )
    assert position <= 100 and latency < 10
    assert moves(worker) > 0
    stack.stop_workers()
    stack.start_worker()  # the rest without a limit: all delivered once
    report = stack.settle_and_check(check, 120)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == BULK + 1, report.summary()


def test_one_priority_keeps_its_order_with_one_worker_thread(stack: Stack) -> None:
    stack.smtp.reply_rate = 200
    check = stack.ledger_check()
    cycle = [1, 3, 1, 7, 1, 0, 3, 9, 1, 7]
    keys: dict[int, list[str]] = {p: [] for p in set(cycle)}
    for n in range(300):
        priority = cycle[n % len(cycle)]
        keys[priority] += bulk(check, f"p{priority}-{n:03d}", 1, priority)
    check.publish()
    # Seconds 0: moves at the threshold, however soon the backlog would be sent (the order
    # across the lane is what this test is about, not when moves start).
    worker = stack.start_worker(concurrency=1, priority_lane_seconds=0)
    later = bulk(check, "p1-later", 60, 1)  # a second wave while the lane holds the first
    check.publish()
    keys[1] += later

    report = stack.settle_and_check(check, 120)
    assert report.ok, report.summary()
    order = [rcpt.split("@")[0] for rcpt, _ in accepted(stack)]
    for priority, published in keys.items():
        assert [k for k in order if k in set(published)] == published, priority
    print(f"MEASURED fifo: {moves(worker):.0f} of 360 moved to the lane, one thread, in order")
    assert moves(worker) > 0  # the order held across the lane, not only in the backlog


def ready(stack: Stack, name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(connection.channel().queue_declare(name, passive=True).method.message_count)
    finally:
        connection.close()


def test_a_kill_9_while_messages_move_to_the_lane_loses_nothing(stack: Stack) -> None:
    settings = stack.settings()
    assert settings.lane_queue is not None
    stack.smtp.reply_rate = 20
    check = stack.ledger_check()
    bulk(check, "kill", 800)
    check.publish()
    with stack.spawn(lease_seconds=2) as process:
        wait_for(lambda: ready(stack, settings.lane_queue or "") >= 100, 30, "moves under way")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    in_lane, in_queue = ready(stack, settings.lane_queue), ready(stack, settings.email_queue)
    print(f"MEASURED kill mid-move: {in_lane} in the lane, {in_queue} still in email.queue")
    assert in_lane > 0 and in_queue > 0  # killed while moving, not after

    stack.smtp.reply_rate = None
    with stack.spawn(lease_seconds=2):
        report = stack.settle_and_check(check, 120)
    assert report.ok, report.summary()
    assert report.counts["lost"] == 0 and report.counts["unexpected"] == 0
    print(f"MEASURED kill mid-move: {json.dumps(dict(report.counts))}")


def consumers(stack: Stack, name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(connection.channel().queue_declare(name, passive=True).method.consumer_count)
    finally:
        connection.close()


def test_without_a_lane_the_worker_orders_what_it_holds_and_moves_nothing(stack: Stack) -> None:
    lane = stack.settings().lane_queue or ""
    stack.smtp.reply_rate = 100
    check = stack.ledger_check()
    bulk(check, "nolane", 200)
    check.publish()
    worker = stack.start_worker(priority_lane_queue="", concurrency=4)
    assert worker.lane is None and consumers(stack, lane) == 0
    urgent = publish_urgent(stack, check, body_priority=9)

    report = stack.settle_and_check(check, 60)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 201
    assert moves(worker) == 0 and ready(stack, lane) == 0
    order = [rcpt for rcpt, _ in accepted(stack)]
    print(f"MEASURED no lane: the urgent message was {order.index(f'{urgent}@example.com') + 1}th")


def test_a_backlog_sent_within_the_lane_seconds_is_not_moved(stack: Stack) -> None:
    """300 bulk messages, relay unpaced: sent in well under a minute, so with
    ``PRIORITY_LANE_SECONDS=60`` a high-priority message behind them would be seen in time
    anyway, and none is published twice through the broker."""
    lane = stack.settings().lane_queue or ""
    check = stack.ledger_check()
    bulk(check, "shallow", 300)
    check.publish()
    worker = stack.start_worker(priority_lane_seconds=60)
    report = stack.settle_and_check(check, 60)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 300
    assert worker.lane is not None and consumers(stack, lane) == 1  # the lane is there...
    assert moves(worker) == 0 and moves(worker, "failed") == 0  # ...and nothing went to it
    print("MEASURED shallow backlog: 0 of 300 moved to the lane")


def test_a_high_priority_message_overtakes_thousands_at_a_fast_relay(stack: Stack) -> None:
    """The relay unpaced (as fast as the worker sends): 4,500 bulk messages are several
    seconds of sending, past the default ``PRIORITY_LANE_SECONDS``, so they move and the
    urgent message published behind them is sent long before the last of them."""
    check = stack.ledger_check()
    bulk(check, "fast", 3 * BULK)
    check.publish()
    worker = stack.start_worker()  # the defaults
    urgent = publish_urgent(stack, check, body_priority=9)
    report = stack.settle_and_check(check, 180)
    assert report.ok, report.summary()
    order = [rcpt for rcpt, _ in accepted(stack)]
    position = order.index(f"{urgent}@example.com") + 1
    print(
        f"MEASURED fast relay: the urgent message was {position}th of {len(order)} accepted, "
        f"{moves(worker):.0f} moved to the lane"
    )
    assert moves(worker) > 0
    assert position <= len(order) // 4  # without moves: after every bulk message published first
