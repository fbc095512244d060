"""When a request may be sent (CONTRACT section 14): ``send_at`` and ``expires_at``.

Each may sit at the top level of the message or in its ``metadata`` (where both are given they
must name the same instant). The only accepted form is an RFC 3339 date-time **with an
offset**: ``2026-12-08T09:00:00+01:00``, ``2026-12-08T08:00:00Z`` (``T``, ``t`` or a space
between date and time; ``z`` as well as ``Z``; up to nine fraction digits, kept to the
microsecond; a leap second ``:60`` reads as the last microsecond of its minute). A local time
without an offset is refused: the worker would have to guess the zone. Values are normalised to
UTC. ``send_at`` further ahead than ``max_days`` is refused (a typo such as a wrong year would
otherwise park a message for years); a past ``send_at`` means "now".

Pure and linear: the value is length-checked before one anchored regular expression without
nested quantifiers reads it, and the clock is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import WithJsonSchema

from schemas.failures import PermanentFailure, Reason

MAX_SCHEDULE_DAYS = 30  # the contract's default for MAX_SCHEDULE_DAYS
FIELDS = ("send_at", "expires_at")
_MAX_TEXT = 40  # 2026-12-08T09:00:00.123456789+01:00 is 35 characters
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d is [0-9] only: int() would read other scripts' digits too
)

# The model's type for both fields: any JSON value, so that a number or an object is refused by
# ``parse_instant`` naming the field, not by a generic type error.
Instant = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "RFC 3339 with an offset (2026-12-08T09:00:00+01:00 or ...Z); "
            "also accepted in metadata",
        }
    ),
]


@dataclass(frozen=True)
class Schedule:
    """The instants a message gave, in UTC; None when absent."""

    send_at: datetime | None = None
    expires_at: datetime | None = None

    def hashed(self, core: Mapping[str, Any]) -> dict[str, Any]:
        """``core`` (the fields the payload hash covers) with each given instant in one
        canonical spelling (UTC, microseconds) instead of as the message spelled it, at the
        top level or in ``metadata``: a republish that spells the same instant differently is
        the same payload, and one that moves it is a conflict. Without either instant,
        ``core`` unchanged: the hash of such a message is what it was before they existed."""
        given = {"send_at": self.send_at, "expires_at": self.expires_at}
        canonical = {name: _canonical(at) for name, at in given.items() if at is not None}
        if not canonical:
            return dict(core)
        hashed = dict(core) | canonical
        metadata = core.get("metadata")
        if isinstance(metadata, Mapping):
            hashed["metadata"] = {k: v for k, v in metadata.items() if k not in FIELDS}
        return hashed


def parse_instant(value: object, name: str) -> datetime:
    """``value`` (an RFC 3339 string with an offset) as an aware UTC datetime. Raises
    ``PermanentFailure(INVALID_MESSAGE)`` naming ``name`` (never echoing the value)."""
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _invalid(name)
    match = RFC3339.fullmatch(value)
    if match is None:
        raise _invalid(name)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    leap = second == "60"  # RFC 3339 allows it; datetime does not
    if zulu:
        offset = timedelta(0)
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            raise _invalid(name)
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (1 if sign == "+" else -1)
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else int(second),
            999_999 if leap else micro,
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):  # 2026-02-30, 24:00, year 1 moved before year 1
        raise _invalid(name) from None


def read_schedule(
    top: Mapping[str, Any], metadata: Mapping[str, Any], *, now: datetime, max_days: int
) -> Schedule:
    """The schedule of a message from its top-level fields (``top``: the values the model read
    under ``send_at``/``sendAt`` and ``expires_at``/``expiresAt``) and its ``metadata``.
    Raises ``PermanentFailure(INVALID_MESSAGE)``: a malformed value or one without an offset,
    the two places disagreeing, or ``send_at`` more than ``max_days`` days after ``now``."""
    found = {name: _one(name, top.get(name), metadata.get(name)) for name in FIELDS}
    send_at = found["send_at"]
    if send_at is not None and send_at - now > timedelta(days=max_days):
        raise PermanentFailure(
            Reason.INVALID_MESSAGE,
            f"send_at: more than {max_days} days ahead (MAX_SCHEDULE_DAYS)",
        )
    return Schedule(send_at, found["expires_at"])


def _one(name: str, top: object, inside: object) -> datetime | None:
    at_top = None if top is None else parse_instant(top, name)
    in_metadata = None if inside is None else parse_instant(inside, f"metadata.{name}")
    if at_top is not None and in_metadata is not None and at_top != in_metadata:
        raise PermanentFailure(Reason.INVALID_MESSAGE, f"{name} and metadata.{name} disagree")
    return at_top or in_metadata


def _canonical(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _invalid(name: str) -> PermanentFailure:
    return PermanentFailure(
        Reason.INVALID_MESSAGE,
        f"{name}: invalid (an RFC 3339 date-time with an offset, like 2026-12-08T09:00:00+01:00)",
    )
