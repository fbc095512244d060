"""The broker topology (CONTRACT section 2), declared idempotently at start-up or checked
passively when an operator manages it elsewhere.

A ``406 PRECONDITION_FAILED`` (the queue exists with other arguments) becomes a
``TopologyError`` that names the queue, the conflict and the passive-mode setting, so a
misconfigured replica fails once, loudly, instead of crash-looping in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from email_worker.config import Settings

PASSIVE_SETTING = "EMAIL_WORKER_PASSIVE_TOPOLOGY=true"


class TopologyError(RuntimeError):
    """The broker's topology does not match what the worker needs; the message says how to fix."""


@dataclass(frozen=True)
class Topology:
    exchange: str
    email_queue: str
    failed_queue: str
    failed_routing_key: str
    routing_keys: tuple[str, ...]
    retry_queues: tuple[tuple[str, float], ...]  # (name, delay seconds), one queue per delay
    queue_type: str
    delivery_limit: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        delays = sorted(set(settings.retry_delays))
        return cls(
            exchange=settings.exchange,
            email_queue=settings.email_queue,
            failed_queue=settings.failed_queue,
            failed_routing_key=settings.failed_routing_key,
            routing_keys=tuple(settings.routing_keys),
            retry_queues=tuple((settings.retry_queue_name(d), d) for d in delays),
            queue_type=settings.queue_type,
            delivery_limit=settings.delivery_limit,
        )

    def retry_queue_for(self, delay: float) -> str:
        for name, queue_delay in self.retry_queues:
            if queue_delay == delay:
                return name
        raise KeyError(f"no retry queue with a delay of {delay} s")

    def email_queue_arguments(self) -> dict[str, Any]:
        # The delivery limit only catches crash loops (a limit of N gives N+1 deliveries on
        # 3.10); retries go through the delay queues. Expired deliveries dead-letter to
        # failed.queue through the exchange, at-least-once so a broker failover loses nothing.
        args: dict[str, Any] = {
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": self.failed_routing_key,
        }
        if self.queue_type == "quorum":
            args |= {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        return args

    def retry_queue_arguments(self, delay: float) -> dict[str, Any]:
        # A fixed TTL per queue: mixed TTLs in one queue would block the head of the line.
        return {
            "x-message-ttl": int(delay * 1000),
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": self.routing_keys[0],
        }


def declare(connection: BlockingConnection, topology: Topology, *, passive: bool) -> None:
    """Declare (or, when ``passive``, check) the exchange, queues and bindings.

    Raises ``TopologyError`` on a 406 (arguments differ) or a 404 in passive mode.
    """
    queues: list[tuple[str, dict[str, Any]]] = [
        (topology.email_queue, topology.email_queue_arguments()),
        (topology.failed_queue, {}),
        *((name, topology.retry_queue_arguments(delay)) for name, delay in topology.retry_queues),
    ]
    channel = connection.channel()
    try:
        _exchange(channel, topology.exchange, passive)
        for name, arguments in queues:
            channel = _queue(connection, channel, name, arguments, passive)
        if not passive:
            for key in topology.routing_keys:
                channel.queue_bind(topology.email_queue, topology.exchange, routing_key=key)
            channel.queue_bind(
                topology.failed_queue, topology.exchange, routing_key=topology.failed_routing_key
            )
    finally:
        if channel.is_open:
            channel.close()


def _exchange(channel: BlockingChannel, name: str, passive: bool) -> None:
    try:
        channel.exchange_declare(name, "direct", durable=True, passive=passive)
    except ChannelClosedByBroker as exc:
        raise TopologyError(f"exchange {name!r}: {exc.reply_text}") from exc


def _queue(
    connection: BlockingConnection,
    channel: BlockingChannel,
    name: str,
    arguments: dict[str, Any],
    passive: bool,
) -> BlockingChannel:
    try:
        channel.queue_declare(name, durable=True, passive=passive, arguments=arguments)
        return channel
    except ChannelClosedByBroker as exc:
        if exc.reply_code == 406:
            raise TopologyError(
                f"queue {name!r} already exists with other arguments: {exc.reply_text}. "
                f"The worker declares it with {arguments}. Delete or migrate the queue, or set "
                f"{PASSIVE_SETTING} to use the existing topology as it is."
            ) from exc
        if exc.reply_code == 404 and passive:
            raise TopologyError(
                f"queue {name!r} does not exist and passive mode is on ({PASSIVE_SETTING}): "
                "declare it, or switch passive mode off."
            ) from exc
        raise TopologyError(f"queue {name!r}: {exc.reply_text}") from exc


def connection_parameters(url: str, heartbeat: int, name: str) -> pika.URLParameters:
    """Parameters for one connection; ``name`` shows in the management UI."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 300
    params.client_properties = {"connection_name": name}
    return params
