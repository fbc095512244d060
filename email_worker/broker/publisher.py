"""Confirmed, mandatory publishing on a connection of its own (RELIABILITY rules 1 and 5).

Flow control blocks publishers; a consumer sharing their connection would stall its acks, so
the worker publishes (retry copies, dead letters) here and consumes elsewhere. One connection
serves all worker threads behind a lock: publishes are rare next to consumes, and a confirm
round trip on loopback is well under a millisecond.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError, NackError, UnroutableError

from email_worker.ports import MessageProperties

log = logging.getLogger(__name__)


UNROUTABLE = "unroutable"  # returned: no queue by that name (or no binding for that key)
NACKED = "publish_nacked"  # refused: a full queue with x-overflow reject-publish, say
UNREACHABLE = "broker_unreachable"


class PublishError(RuntimeError):
    """The broker did not take the message. ``cause`` is a stable code: ``unroutable``,
    ``publish_nacked`` or ``broker_unreachable``."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


class Publisher:
    """Publishes with ``mandatory`` and publisher confirms; returns only once the broker has
    taken responsibility for the message. Reconnects once on a dead connection."""

    def __init__(self, parameters: pika.URLParameters) -> None:
        self._parameters = parameters
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
    ) -> None:
        """Returns once the broker confirmed a message it routed to a queue; raises
        ``PublishError`` otherwise. With ``mandatory``, an unroutable message is returned
        (``basic.return`` before the confirm) instead of being confirmed and dropped."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._open().basic_publish(
                        exchange, routing_key, body, properties, mandatory=True
                    )
                    return
                except UnroutableError as exc:
                    where = f"exchange {exchange!r}, routing key {routing_key!r}"
                    raise PublishError(UNROUTABLE, f"returned by the broker ({where})") from exc
                except NackError as exc:
                    raise PublishError(NACKED, f"nacked by the broker ({routing_key!r})") from exc
                except (AMQPError, OSError) as exc:
                    # An idle publisher connection may have been closed by the broker (missed
                    # heartbeats) or by a restart: reconnect once. A duplicate copy is harmless,
                    # the ledger deduplicates by request_id.
                    self._reset()
                    if attempt == 2:
                        raise PublishError(UNREACHABLE, type(exc).__name__) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self._reset()
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (AMQPError, OSError) as exc:
                log.debug("closing publisher connection: %s", type(exc).__name__)


def copy_properties(
    properties: pika.BasicProperties | MessageProperties,
    headers: dict[str, Any],
    *,
    expiration: str | None = None,
) -> pika.BasicProperties:
    """A persistent copy of ``properties`` with ``headers`` merged in (``None`` removes one).

    The original expiration is never kept: a dead letter must not expire, and a retry copy
    gets the expiration of its delay. ``user_id`` is dropped because the broker refuses one
    that is not the publishing connection's user.
    """
    merged = dict(properties.headers or {})
    for name, value in headers.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=merged,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=expiration,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )
