"""What the worker wants on the broker (CONTRACT section 2): the exchange, ``email.queue``,
``failed.queue``, one retry queue per delay and the bulk lane (CONTRACT section 13, unless it is
turned off), each with the declaration the worker would make.

Wanting is not insisting: a queue that exists is adopted as it is (``topology_survey``), so
nothing here may assume its arguments. The guarantees rest on what the worker controls itself:
retry and dead-letter copies travel by queue name through the default exchange (no binding can
drop them), every publish is mandatory and confirmed, and retry queues dead-letter back to the
email queue through the default exchange as well, at least once when they are quorum queues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingConnection
from pika.exceptions import AMQPError, ChannelClosedByBroker

from email_worker.config import Settings

DEFAULT_EXCHANGE = ""  # routes by queue name; it has a binding for every queue, always


class TopologyError(RuntimeError):
    """The broker's topology does not let the worker run; the message says how to fix it."""


@dataclass(frozen=True)
class QueueSpec:
    """One queue as the worker would declare it (always durable, never auto-delete)."""

    name: str
    role: str  # "email", "failed", "retry" or "lane"
    arguments: Mapping[str, Any] = field(default_factory=dict)
    routing_keys: tuple[str, ...] = ()  # bindings on the worker's exchange
    delay: float | None = None  # retry queues: the fixed delay in seconds

    @property
    def queue_type(self) -> str:
        return str(self.arguments.get("x-queue-type", "classic"))


@dataclass(frozen=True)
class Topology:
    exchange: str
    email_queue: str
    failed_queue: str
    failed_routing_key: str
    routing_keys: tuple[str, ...]
    retry_queues: tuple[tuple[str, float], ...]  # (name, delay seconds), one queue per delay
    queue_type: str = "quorum"
    delivery_limit: int = 10
    queue_arguments: Mapping[str, Any] | None = None  # QUEUE_ARGUMENTS; None: the defaults
    retry_queue_type: str = "quorum"
    lane_queue: str | None = None  # the bulk lane; None: no lane
    lane_queue_type: str = "quorum"

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
            queue_arguments=settings.queue_arguments,
            retry_queue_type=settings.retry_queue_type,
            lane_queue=settings.lane_queue,
            lane_queue_type=settings.priority_lane_queue_type,
        )

    def retry_queue_for(self, delay: float) -> str:
        for name, queue_delay in self.retry_queues:
            if queue_delay == delay:
                return name
        raise KeyError(f"no retry queue with a delay of {delay} s")

    def email_queue_arguments(self) -> dict[str, Any]:
        """``QUEUE_ARGUMENTS`` exactly (plus ``x-queue-type`` for quorum) when set; else the
        defaults: crash-loop dead letters to ``failed.queue`` (a delivery limit of N gives N+1
        deliveries on 3.10), at least once on a quorum queue."""
        if self.queue_arguments is not None:
            quorum = {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}
            return {**self.queue_arguments, **quorum}
        return self._own_queue_arguments(self.queue_type)

    def lane_queue_arguments(self) -> dict[str, Any]:
        """The lane is the worker's own: the email queue's default arguments for its type."""
        return self._own_queue_arguments(self.lane_queue_type)

    def _own_queue_arguments(self, queue_type: str) -> dict[str, Any]:
        quorum = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
        args: dict[str, Any] = {
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": self.failed_routing_key,
        }
        if quorum:
            args |= quorum | {
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        return args

    def retry_queue_arguments(self, delay: float) -> dict[str, Any]:
        """A fixed TTL per queue (mixed TTLs in one queue would block the head of the line),
        expiring back to the email queue BY NAME through the default exchange. A quorum queue
        dead-letters at least once (a copy expiring while the broker restarts is kept); that
        strategy needs ``x-overflow: reject-publish``. Quorum queues honour the jittered
        per-message expiration below the queue TTL on 3.10 (checked by the integration tests).
        """
        args: dict[str, Any] = {
            "x-message-ttl": int(delay * 1000),
            "x-dead-letter-exchange": DEFAULT_EXCHANGE,
            "x-dead-letter-routing-key": self.email_queue,
        }
        if self.retry_queue_type == "quorum":
            args |= {
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        return args

    def queues(self) -> tuple[QueueSpec, ...]:
        """Every queue the worker consumes from or publishes to, the email queue first."""
        lane = () if self.lane_queue is None else (self.lane_queue,)
        return (
            QueueSpec(self.email_queue, "email", self.email_queue_arguments(), self.routing_keys),
            QueueSpec(self.failed_queue, "failed", {}, (self.failed_routing_key,)),
            *(
                QueueSpec(name, "retry", self.retry_queue_arguments(delay), (), delay)
                for name, delay in self.retry_queues
            ),
            *(QueueSpec(name, "lane", self.lane_queue_arguments()) for name in lane),
        )


def connection_parameters(url: str, heartbeat: int, name: str) -> pika.URLParameters:
    """Parameters for one connection; ``name`` shows in the management UI."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 300
    params.client_properties = {"connection_name": name}
    return params


def connector(url: str, heartbeat: int, name: str) -> Callable[[], BlockingConnection]:
    """A function that opens a new blocking connection with ``connection_parameters``."""
    params = connection_parameters(url, heartbeat, name)
    return lambda: pika.BlockingConnection(params)


# For the commands that hold a connection without importing pika themselves (cli/, dlq/, demo/):
# its type, a message's properties, a channel the broker closed (a missing queue), and the
# errors that mean the broker cannot be reached or refused.
Connection = BlockingConnection
Properties = pika.BasicProperties
ChannelClosed = ChannelClosedByBroker
BROKER_ERRORS: tuple[type[Exception], ...] = (AMQPError, OSError)


def address_of(url: str) -> tuple[str, int, str]:
    """The host, port and vhost an AMQP URL names (never its credentials)."""
    params = pika.URLParameters(url)
    return params.host, params.port, params.virtual_host
