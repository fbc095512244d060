"""The copy of a retried message that the ledger keeps, and the message rebuilt from it.

A retry travels as a copy through a delay queue. If the broker loses that copy (a classic delay
queue dead-letters at most once, so a copy expiring while the broker restarts is dropped; an
operator purges a queue), nothing else would bring the request back. So an outcome that schedules
a retry also records the body byte for byte and the properties the copy carries (``keep``), and
``email-worker beat`` publishes one rebuilt from them (``rebuild``) once it is overdue.

What is kept: the AMQP properties a consumer may read (content type and encoding, correlation and
message ids, priority, timestamp, type, app id, reply-to) and the scalar headers, our attempt and
deferral counts and ``traceparent``/``tracestate`` among them. Hazards: the record is JSON in a
``jsonb`` column, which refuses NUL characters; AMQP tables, arrays, timestamps and decimals do
not survive JSON, and pika cannot publish a float at all. Such headers (the broker's own
``x-death`` family among them) are left out, as is ``user_id`` (the broker refuses one that is
not the publishing user's) and the expiration (a re-driven copy goes straight to the email
queue).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pika

from email_worker.broker.settle import FIRST_ATTEMPT_HEADER, retry_headers
from email_worker.disposition import Hold, Retry
from email_worker.ports import Delivery, RetryCopy

# The properties kept, by their pika names; all strings but priority and timestamp (integers).
PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "message_id",
    "priority",
    "timestamp",
    "type",
    "app_id",
    "reply_to",
)
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
# W3C trace context (CONTRACT section 18): a gateway may send it as a byte array, which JSON
# cannot keep; its ASCII text is kept instead, so a re-driven or released copy stays in the trace.
_TRACE_HEADERS = ("traceparent", "tracestate")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SHORTSTR = 255  # bytes in an AMQP table key

Scalar = str | int | bool


def keep(delivery: Delivery, decision: Retry | Hold) -> RetryCopy:
    """What the ledger keeps of ``delivery`` when ``decision`` schedules its retry (the copy the
    settler publishes, less its expiration) or holds it until its send_at (the copy released
    then): the counts of ``decision`` in our headers."""
    properties: dict[str, object] = {}
    for name in PROPERTIES:
        value = _scalar(getattr(delivery.properties, name, None))
        if value is not None:
            properties[name] = value
    headers: dict[str, object] = dict(scalar_headers(delivery.properties.headers))
    headers |= retry_headers(decision, delivery.first_attempt_at)
    properties["headers"] = headers
    return RetryCopy(due_in=decision.delay, body=delivery.body, properties=properties)


def scalar_headers(headers: Mapping[str, object]) -> dict[str, Scalar]:
    """The headers that survive JSON unchanged, without the broker's own."""
    kept: dict[str, Scalar] = {}
    for name, value in headers.items():
        if name.startswith(_BROKER_HEADERS):
            continue
        scalar = _scalar(value)
        if scalar is None and isinstance(value, bytes) and name.lower() in _TRACE_HEADERS:
            scalar = _ascii(value)
        if scalar is None or _text_of(name) is None:
            continue
        if len(name.encode()) <= _SHORTSTR:
            kept[name] = scalar
    return kept


def rebuild(
    properties: Mapping[str, object], first_attempt_at: datetime | None
) -> pika.BasicProperties:
    """A persistent message's properties from what ``keep`` recorded; the request's first
    attempt (from the ledger) fills in our first-attempt header when the copy had none."""
    headers = scalar_headers(_mapping(properties.get("headers")))
    if FIRST_ATTEMPT_HEADER not in headers and first_attempt_at is not None:
        headers[FIRST_ATTEMPT_HEADER] = _iso(first_attempt_at)
    return pika.BasicProperties(
        content_type=_text(properties.get("content_type")),
        content_encoding=_text(properties.get("content_encoding")),
        correlation_id=_text(properties.get("correlation_id")),
        message_id=_text(properties.get("message_id")),
        priority=_integer(properties.get("priority")),
        timestamp=_integer(properties.get("timestamp")),
        type=_text(properties.get("type")),
        app_id=_text(properties.get("app_id")),
        reply_to=_text(properties.get("reply_to")),
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
    )


def _scalar(value: object) -> Scalar | None:
    """``value`` when JSON and ``jsonb`` keep it exactly, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Compared, never `in range(...)`: pika decodes an AMQP long as its own int subclass,
        # and `range.__contains__` scans every element for anything but an exact int (a
        # quorum queue's `x-delivery-count` hung the worker).
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, str):
        return _text_of(value)
    return None  # floats among them: pika cannot encode one


def _text_of(value: str) -> str | None:
    """``value`` when UTF-8 can carry it (no lone surrogates) and ``jsonb`` can (no NUL)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value if "\0" not in value else None


def _ascii(value: bytes) -> str | None:
    try:
        return _text_of(value.decode("ascii"))
    except UnicodeDecodeError:
        return None


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(moment: datetime) -> str:
    """As the settler writes our first-attempt header: UTC, milliseconds, ``Z``."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
