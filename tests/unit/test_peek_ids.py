"""``peek_ids``: the ids of a message refused as invalid, in every accepted shape, and a total
function on any bytes (never raises, only ids the contract allows, bounded work)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.inbound import MAX_ID, PeekedIds, is_valid_id, peek_ids

INVALID = {"template_code": "bad code!", "to_email": "ada@example.com"}  # refused, has no id


def envelopes(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        message,
        {"pattern": "email.send", "data": message},  # NestJS ClientRMQ
        {"success": True, "data": message, "message": "ok"},  # gateway response envelope
        {"pattern": "email", "data": {"success": True, "data": message}},  # both, nested
    ]


@pytest.mark.parametrize("shape", range(4))
@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ({"notification_id": "n-1"}, PeekedIds(notification_id="n-1")),
        ({"notificationId": "n-1"}, PeekedIds(notification_id="n-1")),
        ({"requestId": "r-1", "correlationId": "c-1"}, PeekedIds("r-1", None, "c-1")),
        ({"correlation_id": "c-1", "correlationId": "c-2"}, PeekedIds(correlation_id="c-1")),
        ({"request_id": "r-1", "notification_id": 7}, PeekedIds("r-1")),
        ({"notification_id": "x" * (MAX_ID + 1)}, PeekedIds()),
        ({"notification_id": "a\u2028b"}, PeekedIds()),
    ],
)
def test_ids_are_found_in_every_accepted_shape(
    shape: int, ids: dict[str, Any], expected: PeekedIds
) -> None:
    body = json.dumps(envelopes({**INVALID, **ids})[shape]).encode()
    assert peek_ids(body) == expected


def test_the_callback_is_about_the_notification_then_request_then_correlation_id() -> None:
    assert PeekedIds("r", "n", "c", "m", "a").callback_id == "n"
    assert PeekedIds("r", None, "c", "m", "a").callback_id == "r"
    assert PeekedIds(None, None, "c", "m", "a").callback_id == "c"
    assert PeekedIds(None, None, None, "m", "a").callback_id == "m"
    assert PeekedIds(None, None, None, None, "a").callback_id == "a"
    assert PeekedIds().callback_id is None


def test_amqp_properties_count_when_valid() -> None:
    found = peek_ids(b"not json", message_id="m-1", correlation_id="c-1")
    assert (found.message_id, found.amqp_correlation_id, found.correlation) == ("m-1", "c-1", "c-1")
    assert peek_ids(b"{}", message_id="a\nb", correlation_id=b"bytes") == PeekedIds()
    body_wins = peek_ids(b'{"correlation_id": "body"}', correlation_id="property")
    assert body_wins.correlation == "body"


@pytest.mark.parametrize(
    "body",
    [
        b'{"pattern": "email", "data": {"notificationId": "n-1", "templateCode": ',  # truncated
        b'\xff\xfe{"notification_id": "n-1", "to": [',
        b'{"notification_id": "n-1", "user": {"request_id": 1} ' + b"x" * (2 << 20),  # huge
    ],
)
def test_truncated_and_oversized_bodies_are_searched_by_key(body: bytes) -> None:
    assert peek_ids(body).notification_id == "n-1"


def ids_of(found: PeekedIds) -> list[str | None]:
    return [
        found.request_id,
        found.notification_id,
        found.correlation_id,
        found.message_id,
        found.amqp_correlation_id,
    ]


def check(found: PeekedIds) -> None:
    for value in ids_of(found):
        assert value is None or (is_valid_id(value) and len(value) <= MAX_ID)
        assert value is None or not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)
id_keys = st.sampled_from(
    ["request_id", "requestId", "notification_id", "notificationId", "correlation_id", "data"]
)


@settings(max_examples=300)
@given(st.binary(max_size=4096), json_values, json_values)
def test_never_raises_and_returns_only_allowed_ids_on_any_bytes(
    raw: bytes, message_id: Any, correlation_id: Any
) -> None:
    check(peek_ids(raw, message_id=message_id, correlation_id=correlation_id))


@settings(max_examples=300)
@given(st.dictionaries(id_keys, json_values, max_size=6), st.integers(0, 3), st.integers(0, 200))
def test_never_raises_on_message_like_json_even_cut_anywhere(
    fields: dict[str, Any], shape: int, cut: int
) -> None:
    body = json.dumps(envelopes(fields)[shape]).encode()
    check(peek_ids(body))
    check(peek_ids(body[: len(body) - cut]))


def cpu_seconds(body: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        check(peek_ids(body))
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize(
    "unit",
    [b"[", b"\\", b'"notification_id":', b'{"notification_id": "' + b"a" * 300 + b'", ', b" "],
    ids=["nesting", "escapes", "keys", "long-values", "spaces"],
)
def test_time_grows_linearly_with_hostile_input(unit: bytes) -> None:
    # RELIABILITY rule 19: four times the input costs about four times the time, never more
    # than eight (a backtracking pattern would cost sixteen or far more).
    prefix = b'{"notification_id"' if unit == b" " else b""
    small = prefix + unit * (60_000 // len(unit))
    large = prefix + unit * (240_000 // len(unit))
    assert cpu_seconds(large) <= 8 * cpu_seconds(small) + 0.02
