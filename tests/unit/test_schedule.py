"""``send_at`` and ``expires_at`` (CONTRACT section 14): RFC 3339 with an offset only, at the
top level or in ``metadata``, normalised to UTC, ``send_at`` at most MAX_SCHEDULE_DAYS ahead;
a total parser (property tests) in linear time; and what the payload hash makes of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.failures import PermanentFailure, Reason
from schemas.inbound import parse_message, payload_hash
from schemas.schedule import RFC3339, parse_instant, read_schedule
from tests.support.growth import assert_linear

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INVALID_DETAIL = (
    "send_at: invalid (an RFC 3339 date-time with an offset, like 2026-12-08T09:00:00+01:00)"
)
BASE = {"request_id": "r-1", "template_code": "welcome", "to": "ada@example.com"}


def parse(**fields: Any) -> Any:
    body = json.dumps({**BASE, **fields}).encode()
    return parse_message(body, clock=lambda: NOW, max_schedule_days=30)


def refusal(**fields: Any) -> PermanentFailure:
    with pytest.raises(PermanentFailure) as caught:
        parse(**fields)
    assert caught.value.reason == Reason.INVALID_MESSAGE
    return caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-08T09:00:00+01:00", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08T08:00:00Z", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08t08:00:00z", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08 08:00:00Z", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08T03:30:00-04:30", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08T08:00:00-00:00", datetime(2026, 12, 8, 8, 0, tzinfo=UTC)),
        ("2026-12-08T08:00:00.5Z", datetime(2026, 12, 8, 8, 0, 0, 500_000, tzinfo=UTC)),
        ("2026-12-08T08:00:00.123456789Z", datetime(2026, 12, 8, 8, 0, 0, 123_456, tzinfo=UTC)),
        ("2026-12-31T23:59:60Z", datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        ("2027-01-01T00:30:00+01:00", datetime(2026, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
def test_rfc3339_with_an_offset_is_read_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_instant(text, "send_at")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-08T09:00:00",  # no offset: a local time, the zone would be a guess
        "2026-12-08",
        "2026-12-08T09:00+01:00",  # no seconds
        "2026-12-08T09:00:00+0100",  # ISO 8601 basic offset, not RFC 3339
        "2026-12-08T09:00:00+24:00",
        "2026-12-08T09:00:00+01:60",
        "2026-13-08T09:00:00Z",
        "2026-02-30T09:00:00Z",
        "2026-12-08T24:00:00Z",
        "2026-12-08T09:00:00.Z",
        "2026-12-08T09:00:00.1234567890Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "\u0662\u0660\u0662\u0666-12-08T09:00:00Z",  # Arabic-Indic digits
        " 2026-12-08T09:00:00Z",
        "2026-12-08T09:00:00Z\n",
        "",
        1796716800,
        1796716800.0,
        True,
        ["2026-12-08T09:00:00Z"],
        {"at": "2026-12-08T09:00:00Z"},
    ],
)
def test_anything_else_is_invalid_and_the_detail_names_the_field(value: object) -> None:
    failure = refusal(send_at=value)
    assert failure.detail == INVALID_DETAIL  # one fixed text: the value is never echoed


def test_either_place_is_read_and_both_must_agree() -> None:
    at_top = parse(send_at="2026-12-08T09:00:00+01:00", expires_at="2026-12-09T00:00:00Z")
    inside = parse(
        metadata={"send_at": "2026-12-08T08:00:00Z", "expires_at": "2026-12-09T00:00:00Z"}
    )
    camel = parse(sendAt="2026-12-08T08:00:00Z", expiresAt="2026-12-09T00:00:00Z")
    expected = (datetime(2026, 12, 8, 8, tzinfo=UTC), datetime(2026, 12, 9, tzinfo=UTC))
    for request in (at_top, inside, camel):
        assert (request.send_at, request.expires_at) == expected
    same = parse(send_at="2026-12-08T08:00:00Z", metadata={"send_at": "2026-12-08T09:00:00+01:00"})
    assert same.send_at == expected[0]
    failure = refusal(send_at="2026-12-08T08:00:00Z", metadata={"send_at": "2026-12-08T08:00:01Z"})
    assert failure.detail == "send_at and metadata.send_at disagree"
    assert refusal(metadata={"expires_at": "soon"}).detail.startswith("metadata.expires_at:")


def test_send_at_at_most_max_schedule_days_ahead() -> None:
    assert parse(send_at=(NOW + timedelta(days=30)).isoformat()).send_at == NOW + timedelta(days=30)
    failure = refusal(send_at=(NOW + timedelta(days=30, seconds=1)).isoformat())
    assert failure.detail == "send_at: more than 30 days ahead (MAX_SCHEDULE_DAYS)"
    with pytest.raises(PermanentFailure):
        read_schedule({"send_at": "2026-12-03T12:00:01Z"}, {}, now=NOW, max_days=2)
    # expires_at has no such limit; a past send_at is kept as given (the pipeline sends now).
    far = parse(expires_at="2030-01-01T00:00:00Z", send_at="2020-01-01T00:00:00Z")
    assert far.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert far.send_at == datetime(2020, 1, 1, tzinfo=UTC)


def test_absent_fields_leave_the_payload_hash_as_it_was() -> None:
    request = parse()
    assert (request.send_at, request.expires_at) == (None, None)
    core: dict[str, Any] = {
        "request_id": "r-1",
        "notification_id": "r-1",
        "template_code": "welcome",
        "recipient": "ada@example.com",
        "user_id": None,
        "variables": {},
        "language": None,
        "metadata": {},
    }
    assert request.payload_hash == payload_hash(core)
    assert parse(send_at=None, expires_at=None).payload_hash == request.payload_hash


def test_the_hash_covers_the_instant_not_its_spelling() -> None:
    plain = parse(send_at="2026-12-08T08:00:00Z").payload_hash
    assert parse(send_at="2026-12-08T09:00:00.000+01:00").payload_hash == plain
    assert parse(sendAt="2026-12-08 08:00:00z").payload_hash == plain
    assert parse(send_at="2026-12-08T08:00:01Z").payload_hash != plain  # moved: a conflict
    in_metadata = parse(metadata={"send_at": "2026-12-08T08:00:00Z", "k": 1}).payload_hash
    assert parse(metadata={"send_at": "2026-12-08T09:00:00+01:00", "k": 1}).payload_hash == (
        in_metadata
    )
    assert parse(metadata={"send_at": "2026-12-08T08:00:00Z", "k": 2}).payload_hash != in_metadata
    assert parse(expires_at="2026-12-08T08:00:00Z").payload_hash != plain
    assert parse().payload_hash != plain


def test_a_send_at_in_the_past_hashes_the_same_later() -> None:
    """A republish after send_at passed is the same payload (not a conflict)."""
    body = json.dumps({**BASE, "send_at": "2026-12-08T08:00:00Z"}).encode()
    before = parse_message(body, clock=lambda: NOW)
    after = parse_message(body, clock=lambda: NOW + timedelta(days=60))
    assert before.payload_hash == after.payload_hash


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    minutes=offsets,
    separator=st.sampled_from("Tt "),
)
def test_any_instant_with_any_offset_round_trips(
    moment: datetime, minutes: int, separator: str
) -> None:
    zone = timezone(timedelta(minutes=minutes))
    local = moment.astimezone(zone)
    sign = "-" if minutes < 0 else "+"
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S.%f") + (
        f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    )
    assert parse_instant(text, "send_at") == moment


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"\A[0-9T:+\-. Zz]{10,40}\Z"))
def test_any_text_is_read_or_refused_never_crashes(text: str) -> None:
    try:
        parsed = parse_instant(text, "expires_at")
    except PermanentFailure as failure:
        assert failure.reason == Reason.INVALID_MESSAGE
        assert failure.detail.startswith("expires_at: invalid")
    else:
        assert parsed.tzinfo is UTC


# Printable text only: control characters in keys are refused earlier, as invalid_json.
texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(send_at=json_values, expires_at=json_values, in_metadata=st.booleans())
def test_any_json_value_is_read_or_refused_as_invalid_message(
    send_at: object, expires_at: object, in_metadata: bool
) -> None:
    fields = {"send_at": send_at, "expires_at": expires_at}
    message = {**BASE, "metadata": fields} if in_metadata else {**BASE, **fields}
    try:
        request = parse_message(json.dumps(message).encode(), clock=lambda: NOW)
    except PermanentFailure as failure:
        assert failure.reason == Reason.INVALID_MESSAGE
    else:
        for value in (request.send_at, request.expires_at):
            assert value is None or value.tzinfo is UTC


def _quiet(value: object) -> object:
    try:
        return parse_instant(value, "send_at")
    except PermanentFailure:
        return None


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "2026-12-08T09:00:00." + "1" * n + "Z",
        lambda n: "9" * n,
        lambda n: "2026-12-08T09:00:00+01:00" * n,
    ],
)
def test_the_parser_is_linear(make: Any) -> None:
    # The pattern itself, without the length cap that parse_instant puts before it.
    assert_linear(RFC3339.fullmatch, make, limit=1 << 20)
    assert_linear(_quiet_message, lambda n: json.dumps({**BASE, "send_at": make(n)}))
    assert _quiet(make(64)) is None  # too long: refused before the pattern reads it


def _quiet_message(body: str) -> object:
    try:
        return parse_message(body.encode(), max_bytes=1 << 30, clock=lambda: NOW)
    except PermanentFailure:
        return None
