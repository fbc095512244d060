"""Delivery conversion: a pika delivery (method, properties, body) into the neutral
``ports.Delivery`` the handler reads (``publisher.copy_properties`` turns neutral properties back
into pika's for a copy).

The retry counts are read from the worker's own headers (named in ``settlement.py``, where they
are written). A header that is not a non-negative integer counts as 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import pika
from pika.spec import Basic

from email_worker.broker.settle import ATTEMPTS_HEADER, DEFERRALS_HEADER, FIRST_ATTEMPT_HEADER
from email_worker.ports import Delivery, MessageProperties

# The AMQP basic properties, by their names on both types.
PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)


def neutral_properties(properties: pika.BasicProperties) -> MessageProperties:
    values = {name: getattr(properties, name, None) for name in PROPERTY_NAMES}
    return MessageProperties(headers=dict(properties.headers or {}), **values)


def _int_header(headers: Mapping[str, object], name: str) -> int:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(0, int(value)) if isinstance(value, int | str) else 0
    except ValueError:
        return 0


def delivery_from(
    method: Basic.Deliver, properties: pika.BasicProperties, body: bytes, generation: int
) -> Delivery:
    neutral = neutral_properties(properties)
    first = neutral.headers.get(FIRST_ATTEMPT_HEADER)
    if isinstance(first, bytes):
        first = first.decode("ascii", "replace")
    return Delivery(
        body=body,
        properties=neutral,
        delivery_tag=method.delivery_tag or 0,
        generation=generation,
        redelivered=bool(method.redelivered),
        attempts=_int_header(neutral.headers, ATTEMPTS_HEADER),
        deferrals=_int_header(neutral.headers, DEFERRALS_HEADER),
        first_attempt_at=first if isinstance(first, str) else None,
    )
