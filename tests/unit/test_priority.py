"""Priority at intake (``email_worker.priority``): the body's priority read as ``parse_message``
reads it, in every accepted shape, total on any bytes and linear in their size; the move rule;
what the worker knows about its lane."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.priority import (
    LanePolicy,
    LaneState,
    SendRate,
    backlog_is_deep,
    body_priority,
    delivery_priority,
)
from schemas.failures import PermanentFailure
from schemas.inbound import parse_message
from tests.support.growth import assert_linear

MESSAGE = {"request_id": "r-1", "template_code": "welcome", "to_email": "ada@example.com"}


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def shapes(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        message,
        {"pattern": "email.send", "data": message},  # NestJS ClientRMQ
        {"success": True, "data": message, "message": "ok"},  # gateway response envelope
        {"pattern": "email", "data": {"success": True, "data": message}},  # both, nested
    ]


@pytest.mark.parametrize("shape", range(4))
@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        *[(9, 9), (0, 0), (10, 10), (" 7 ", 7), ("10", 10), (11, None), (-1, None)],
        *[(True, None), (1.5, None), ("high", None), ("", None), (None, None), ([5], None)],
    ],
)
def test_the_body_priority_in_every_accepted_shape(
    shape: int, priority: object, expected: int | None
) -> None:
    body = encode(shapes({**MESSAGE, "priority": priority})[shape])
    assert body_priority(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"request_id": "r", "\\u0070riority": 8}', 8),  # an escaped key is still the key
        (encode({**MESSAGE, "variables": {"priority": 9}}), None),  # not the message's
        (encode(shapes(shapes({**MESSAGE, "priority": 9})[1])[3]), None),  # three envelopes
        (encode({"a": {"b": {"c": {"data": {**MESSAGE, "priority": 9}}}}}), None),
        (encode({"request_id": "r", "priority": 2, "pattern": "p", "data": {"priority": 9}}), 2),
        (b'{"priority": 9', None),  # truncated
        (b'{"priority": 9, "priority": 3}', 3),  # parse_message refuses it: any value is fine
        (b"[" * 100_000 + b'"priority"' + b"]" * 100_000, None),  # nesting past the stack
        (b'\xff{"priority": 9}', None),  # not UTF-8
        (b"priority", None),
        (b"", None),
    ],
)
def test_odd_bodies(body: bytes, expected: int | None) -> None:
    assert body_priority(body) == expected


def test_a_body_over_the_size_limit_is_not_read() -> None:
    body = encode({**MESSAGE, "priority": 9, "pad": "x" * 2000})
    assert body_priority(body, max_bytes=len(body)) == 9
    assert body_priority(body, max_bytes=len(body) - 1) is None


@pytest.mark.parametrize(
    ("body_value", "amqp", "expected"),
    [
        *[(3, 7, 7), (9, 2, 9), (None, None, 0), (None, True, 0), (4, "9", 4)],
        *[(None, 300, 255), (2, -4, 2), (None, 0, 0)],
    ],
)
def test_the_delivery_priority_is_the_higher_of_body_and_property(
    body_value: int | None, amqp: object, expected: int
) -> None:
    message = MESSAGE if body_value is None else {**MESSAGE, "priority": body_value}
    assert delivery_priority(encode(message), amqp) == expected


priorities = st.one_of(
    st.integers(0, 10),
    st.integers(0, 10).map(lambda n: f" {n}"),
    st.integers(-5, 20),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(priority=priorities, shape=st.integers(0, 3), camel=st.booleans())
def test_it_agrees_with_parse_message_on_every_message_parse_message_accepts(
    priority: object, shape: int, camel: bool
) -> None:
    message: dict[str, Any] = {**MESSAGE, "priority": priority}
    if camel:
        message["requestId"] = message.pop("request_id")
    body = encode(shapes(message)[shape])
    try:
        parsed = parse_message(body).priority
    except PermanentFailure:
        return  # refused: whatever the intake read only ordered it
    assert body_priority(body) == parsed


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_any_bytes_give_a_priority_or_none_and_never_raise(body: bytes) -> None:
    found = body_priority(b'{"priority":' + body)
    assert found is None or 0 <= found <= 10
    assert 0 <= delivery_priority(body, 1) <= 10


GROWING = {
    "long string": lambda n: b'{"priority": 3, "x": "' + b"a" * n + b'"}',
    "many keys": lambda n: b'{"priority": 3' + b', "k": 1' * n + b"}",
    "many arrays": lambda n: b'{"priority": 1, "a": [' + b"[[]]," * n + b"[]]}",
    "no key": lambda n: b"x" * n,
}


@pytest.mark.parametrize("make", GROWING.values(), ids=GROWING.keys())
def test_reading_is_linear_in_the_body(make: Any) -> None:
    assert_linear(lambda body: body_priority(body, max_bytes=1 << 30), make)


POLICY = LanePolicy(high=5, threshold=32)


@pytest.mark.parametrize(
    ("priority", "window", "busy", "open_", "moves"),
    [
        (1, 31, False, True, False),  # no backlog, lane empty: stays local
        (1, 32, False, True, True),  # a backlog: moves
        (1, 0, True, True, True),  # the lane may hold earlier ones: follows them
        (4, 100, True, True, True),
        (5, 100, True, True, False),  # high priority never moves
        (9, 100, True, True, False),
        (1, 100, True, False, False),  # moves off after a failure
    ],
)
def test_the_move_rule(priority: int, window: int, busy: bool, open_: bool, moves: bool) -> None:
    assert POLICY.moves(priority, window=window, lane_busy=busy, lane_open=open_) is moves


def test_without_a_lane_nothing_moves() -> None:
    policy = LanePolicy(high=5, threshold=1, lane=False)
    assert not policy.moves(0, window=100, lane_busy=True, lane_open=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lane_is_busy_until_a_read_after_the_last_move_finds_it_empty() -> None:
    state = LaneState(Clock())
    assert state.busy and state.needs_depth() and not state.known  # unknown at start-up
    state.depth_read(state.depth_read_started(), 0)
    assert not state.busy and not state.needs_depth() and state.known

    state.submitted()
    assert state.busy and not state.needs_depth()  # a move in progress
    started = state.depth_read_started()
    state.settled(moved=True)
    assert state.busy and state.needs_depth()
    state.depth_read(started, 0)  # begun before the move was confirmed: proves nothing
    assert state.busy
    state.depth_read(state.depth_read_started(), 3)
    assert state.busy
    state.depth_read(state.depth_read_started(), 0)
    assert not state.busy


def test_a_failed_move_leaves_the_lane_as_it_was() -> None:
    state = LaneState(Clock())
    state.depth_read(state.depth_read_started(), 0)
    state.submitted()
    state.settled(moved=False)
    assert not state.busy and state.pending == 0


def test_moves_stay_off_for_the_time_given() -> None:
    clock = Clock()
    state = LaneState(clock)
    assert state.open
    state.turn_off(30)
    clock.now += 29.9
    assert not state.open
    state.turn_off(0.05)  # a shorter turn-off never shortens the one in force
    clock.now += 0.2
    assert state.open


def test_the_lane_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from email_worker.config import Settings

    default = Settings(email_queue="q.email", prefetch=10)
    assert (default.lane_queue, default.lane_threshold, default.priority_high) == (
        "q.email.bulk",
        5,
        5,
    )
    monkeypatch.setenv("EMAIL_WORKER_PRIORITY_LANE_QUEUE", "")  # the way to turn it off
    monkeypatch.setenv("EMAIL_WORKER_PRIORITY_LANE_THRESHOLD", "3")
    assert (Settings().lane_queue, Settings().lane_threshold) == (None, 3)
    monkeypatch.setenv("EMAIL_WORKER_PRIORITY_HIGH", "11")
    with pytest.raises(ValueError, match="priority_high"):
        Settings()


DEEP = LanePolicy(high=5, threshold=32, seconds=5.0)


@pytest.mark.parametrize(
    ("window", "busy", "deep", "moves"),
    [
        (40, False, False, False),  # a backlog the workers send soon: stays in email.queue
        (40, False, True, True),  # a deep one: moves
        (10, False, True, False),  # no backlog of its own: stays, however deep the queue
        (0, True, False, True),  # the lane may hold earlier ones: follows them, deep or not
    ],
)
def test_with_lane_seconds_only_a_deep_backlog_moves(
    window: int, busy: bool, deep: bool, moves: bool
) -> None:
    assert DEEP.moves(1, window=window, lane_busy=busy, lane_open=True, deep=deep) is moves
    assert DEEP.weighs_backlog(window) is (window >= 32)
    assert not POLICY.weighs_backlog(window)  # seconds 0: the depth never decides


@pytest.mark.parametrize(
    ("ready", "consumers", "rate", "deep"),
    [
        (1000, 2, 100.0, False),  # 5 s exactly: not more than the limit
        (1001, 2, 100.0, True),
        (3000, 1, 1000.0, False),
        (10, 1, 0.0, True),  # nothing sent over a whole window: any backlog is deep
        (0, 1, 0.0, False),
        (10**6, 1, None, False),  # pace unknown (start-up): never deep on a guess
        (600, 0, 100.0, True),  # no consumer reported: this process alone
    ],
)
def test_a_backlog_is_deep_past_the_lane_seconds_of_sending(
    ready: int, consumers: int, rate: float | None, deep: bool
) -> None:
    assert backlog_is_deep(ready, consumers, rate, 5.0) is deep


def test_the_pace_is_unknown_until_enough_finished_then_the_best_of_the_last_seconds() -> None:
    rate = SendRate(window=1.0, memory=5.0)
    assert rate.sample(0.0, 0) is None  # nothing finished: start-up says nothing of the pace
    assert rate.sample(0.1, 0) is None
    assert rate.sample(0.2, 2) is None  # the first finished: measured from here
    assert rate.sample(0.25, 4) is None  # too short, too few
    assert rate.sample(0.35, 12) == pytest.approx(10 / 0.15)  # enough finished early on
    for t in range(1, 4):
        rate.sample(0.35 + t, 12 + 100 * t)  # 100 a second
    assert rate.sample(4.35, 12 + 300 + 10) == pytest.approx(100.0)  # a pause: the best stays
    for t in range(5, 11):
        latest = rate.sample(0.35 + t, 322)  # nothing more finished
    assert latest == 0.0  # a whole memory of nothing: the pace is 0


def test_the_lane_state_reports_the_latest_depth_reading() -> None:
    state = LaneState(Clock())
    assert not state.deep
    state.set_deep(True)
    assert state.deep
    state.set_deep(False)
    assert not state.deep


def test_the_lane_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from email_worker.config import Settings

    assert Settings().priority_lane_seconds == 1.0
    monkeypatch.setenv("EMAIL_WORKER_PRIORITY_LANE_SECONDS", "0")  # at the threshold, as before
    assert Settings().priority_lane_seconds == 0.0
    monkeypatch.setenv("EMAIL_WORKER_PRIORITY_LANE_SECONDS", "-1")
    with pytest.raises(ValueError, match="priority_lane_seconds"):
        Settings()
