"""The local backlog (highest priority first, first in first out within one) and the
dispatcher between the consumer's I/O thread and the worker threads: what moves to the lane,
what stays, what a worker thread drops, and what is counted in flight."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from email_worker.backlog import Backlog
from email_worker.broker.dispatch import Dispatcher, Received
from email_worker.ports import Delivery, MessageProperties
from email_worker.priority import LanePolicy


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_backlog_hands_out_the_highest_priority_first_then_in_arrival_order() -> None:
    backlog: Backlog[str] = Backlog(high=5)
    for item, priority in [("a1", 1), ("c9", 9), ("b1", 1), ("d5", 5), ("e9", 9), ("f0", 0)]:
        backlog.put(item, priority)
    assert backlog.waiting() == (3, 3)
    taken = [backlog.take(0) for _ in range(6)]
    assert taken == ["c9", "e9", "d5", "a1", "b1", "f0"]
    assert backlog.waiting() == (0, 0) and backlog.take(0) is None


def test_a_closed_backlog_wakes_its_takers_and_hands_out_nothing_more() -> None:
    backlog: Backlog[str] = Backlog(high=5)
    got: list[str | None] = []
    taker = threading.Thread(target=lambda: got.append(backlog.take()))
    taker.start()
    backlog.close()
    taker.join(5)
    assert got == [None]
    assert backlog.put("late", 9) is False and len(backlog) == 0


def test_many_takers_share_the_backlog_without_losing_or_repeating_an_item() -> None:
    backlog: Backlog[int] = Backlog(high=5)
    taken: list[int] = []
    lock = threading.Lock()

    def take_all() -> None:
        while (item := backlog.take(0.2)) is not None:
            with lock:
                taken.append(item)

    takers = [threading.Thread(target=take_all) for _ in range(4)]
    for taker in takers:
        taker.start()
    for n in range(2000):
        backlog.put(n, n % 11)
    for taker in takers:
        taker.join(10)
    assert sorted(taken) == list(range(2000))


def delivery(tag: int, priority: int | None = None, generation: int = 1) -> Delivery:
    body = json.dumps({"request_id": f"r{tag}", "priority": priority}).encode()
    return Delivery(body, MessageProperties(), tag, generation, False, 0, 0, None)


class FakeMover:
    def __init__(self) -> None:
        self.submitted: list[Received] = []

    def submit(self, item: Received) -> None:
        self.submitted.append(item)


class Harness:
    """A dispatcher whose one worker thread records what it processed; ``hold`` keeps the
    first delivery in progress until released, so that the others wait in the backlog."""

    def __init__(self, *, threshold: int = 2, mover: bool = True, live: bool = True) -> None:
        self.processed: list[int] = []
        self.requeued: list[int] = []
        self.release = threading.Event()
        self.live = live
        self.mover = FakeMover()
        self.dispatcher = Dispatcher(
            self.process,
            concurrency=1,
            policy=LanePolicy(high=5, threshold=threshold, lane=mover),
            live=lambda d: self.live,
            requeue=lambda d: self.requeued.append(d.delivery_tag),
            max_message_bytes=1 << 16,
        )
        if mover:
            self.dispatcher.attach(self.mover)
        self.dispatcher.lane.depth_read(0, 0)  # the lane is known empty

    def process(self, delivery: Delivery) -> None:
        if delivery.body.endswith(b"boom"):
            raise RuntimeError("a bug")
        self.release.wait(5)
        self.processed.append(delivery.delivery_tag)


def test_low_priority_deliveries_move_once_the_window_holds_the_threshold() -> None:
    h = Harness(threshold=2)
    d = h.dispatcher
    d.receive(delivery(1, 1))
    d.receive(delivery(2, 1))
    d.receive(delivery(3, 1))  # two unfinished from the email queue: a backlog
    d.receive(delivery(4, 9))  # high: never moved
    d.receive(delivery(5, 0), from_lane=True)  # from the lane: never moved again
    assert [item.delivery.delivery_tag for item in h.mover.submitted] == [3]
    assert d.lane.busy  # the move is pending: what follows must follow it
    assert d.in_flight == 5 and len(d.backlog) == 4


def test_while_the_lane_may_hold_messages_every_low_priority_one_follows_them() -> None:
    h = Harness(threshold=100)
    h.dispatcher.lane.submitted()  # a move in progress
    h.dispatcher.receive(delivery(1, 4))
    h.dispatcher.receive(delivery(2, 5))
    assert [item.delivery.delivery_tag for item in h.mover.submitted] == [1]


def test_consumption_waits_for_the_lane_depth_only_when_there_is_a_lane() -> None:
    h = Harness()
    assert h.dispatcher.ready()  # the harness read the lane's depth
    fresh = Dispatcher(
        lambda d: None,
        concurrency=1,
        policy=LanePolicy(),
        live=lambda d: True,
        requeue=lambda d: None,
        max_message_bytes=1024,
    )
    assert fresh.ready()  # no mover: nothing to wait for
    fresh.attach(FakeMover())
    fresh.start()
    try:
        assert not fresh.ready()
        fresh.lane.turn_off(1)  # a missing lane counts as known: moves are off
        assert fresh.ready()
    finally:
        fresh.stop()


def test_without_a_lane_everything_stays_local() -> None:
    h = Harness(threshold=1, mover=False)
    for tag in range(1, 5):
        h.dispatcher.receive(delivery(tag, 0))
    assert len(h.dispatcher.backlog) == 4


def test_worker_threads_take_the_highest_priority_first() -> None:
    h = Harness(threshold=100)
    d = h.dispatcher
    d.start()
    try:
        d.receive(delivery(1, 0))
        wait_until(lambda: len(d.backlog) == 0)  # the worker holds the first one
        for tag, priority in [(2, 1), (3, 0), (4, 9), (5, 1), (6, 7)]:
            d.receive(delivery(tag, priority))
        h.release.set()
        wait_until(lambda: d.in_flight == 0)
    finally:
        d.stop()
    assert h.processed == [1, 4, 6, 2, 5, 3]


def test_a_failed_move_is_processed_here_and_finished_once() -> None:
    h = Harness(threshold=0)
    d = h.dispatcher
    h.release.set()
    d.receive(delivery(1, 1))
    (item,) = h.mover.submitted
    d.start()
    try:
        d.hand_back(item)
        wait_until(lambda: d.in_flight == 0)
    finally:
        d.stop()
    assert h.processed == [1]


def test_a_delivery_of_a_channel_that_is_gone_is_dropped_not_processed() -> None:
    h = Harness(live=False)
    h.release.set()
    h.dispatcher.start()
    try:
        h.dispatcher.receive(delivery(1, 1))
        wait_until(lambda: h.dispatcher.in_flight == 0)
    finally:
        h.dispatcher.stop()
    assert h.processed == [] and h.requeued == []


def test_an_error_escaping_the_processor_requeues_the_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(threshold=100)
    boom = Delivery(b"boom", MessageProperties(), 7, 1, False, 0, 0, None)
    h.dispatcher.start()
    try:
        h.dispatcher.receive(boom)
        wait_until(lambda: h.dispatcher.in_flight == 0)
    finally:
        h.dispatcher.stop()
    assert h.requeued == [7]
    assert "unhandled error" in caplog.text


def test_after_a_hand_back_to_a_stopped_dispatcher_nothing_stays_in_flight() -> None:
    h = Harness(threshold=0)
    h.dispatcher.receive(delivery(1, 1))
    (item,) = h.mover.submitted
    h.dispatcher.stop()
    h.dispatcher.hand_back(item)
    assert h.dispatcher.in_flight == 0
