"""One delivery as the worker sees it: the message, the channel it came on, and the retry
counts carried in the worker's own headers (never ``x-`` headers: from RabbitMQ 3.13 the broker
owns ``x-death``). ``consumer`` builds these; the pipeline and the settlement read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pika
from pika.spec import Basic

ATTEMPTS_HEADER = "email_worker_attempts"
DEFERRALS_HEADER = "email_worker_deferrals"
FIRST_ATTEMPT_HEADER = "email_worker_first_attempt_at"


@dataclass(frozen=True)
class Delivery:
    """One message as received, with the retry counts carried in our own headers."""

    body: bytes
    properties: pika.BasicProperties
    delivery_tag: int
    generation: int
    redelivered: bool
    attempts: int
    deferrals: int
    first_attempt_at: str | None


def _int_header(headers: dict[str, object], name: str) -> int:
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
    headers = dict(properties.headers or {})
    first = headers.get(FIRST_ATTEMPT_HEADER)
    if isinstance(first, bytes):
        first = first.decode("ascii", "replace")
    return Delivery(
        body=body,
        properties=properties,
        delivery_tag=method.delivery_tag or 0,
        generation=generation,
        redelivered=bool(method.redelivered),
        attempts=_int_header(headers, ATTEMPTS_HEADER),
        deferrals=_int_header(headers, DEFERRALS_HEADER),
        first_attempt_at=first if isinstance(first, str) else None,
    )
