"""The RabbitMQ consumer: pika on one I/O thread, the work on worker threads that take the
local backlog highest priority first (``dispatch.py``); the email queue and the bulk lane
(``lane.py``) are consumed on one channel, each by a consumer of its own, so one ack path serves
both.

Hazards this module exists to handle (RELIABILITY rules 1-5):
- pika is not thread-safe and heartbeats are only answered while the I/O thread runs
  ``process_data_events``. Blocking it past the heartbeat drops the connection and redelivers
  the message (a duplicate email), so SMTP and HTTP run on worker threads and every ack goes
  back through ``add_callback_threadsafe``.
- Acks belong to one channel. After a reconnect, a late ack for a delivery of the old channel
  must be dropped (the broker has already requeued it); each delivery carries its generation.
- Prefetch is per consumer (global QoS on a quorum queue closes the connection on 3.10): the
  email queue and the lane each get ``prefetch`` unacknowledged deliveries.
- An ack with ``multiple`` covers every earlier unsettled delivery of the channel, so it is only
  used up to the oldest delivery still being worked on (``acks.coalesce_acks``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from functools import partial

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError
from pika.spec import Basic

from email_worker.broker import acks
from email_worker.broker.acks import Settlement
from email_worker.broker.delivery import delivery_from
from email_worker.broker.dispatch import Dispatcher
from email_worker.broker.lane import Lane, MoveHooks, subscribe
from email_worker.broker.mover import LaneMover
from email_worker.ports import Delivery
from email_worker.priority import LanePolicy
from schemas.inbound import MAX_BYTES

log = logging.getLogger(__name__)

# Why consumption pauses, by cause code (the reason a SystemicFailure carries, or a publisher
# cause); the log line, /readyz and the paused gauge name the code.
PAUSE_EXPLANATIONS = {
    "smtp_auth_failed": "the SMTP relay refuses our credentials",
    "smtp_tls_failed": "TLS with the SMTP relay fails (certificate or STARTTLS)",
    "template_service_unauthorized": "the template service refuses our token (401/403)",
    "user_service_unauthorized": "the user service refuses our token (401/403)",
    "unroutable": "a retry or dead-letter copy came back unroutable: a queue is missing",
    "publish_nacked": "the broker refused a retry or dead-letter copy (a full queue?)",
}


def pause_explanation(cause: str) -> str:
    return PAUSE_EXPLANATIONS.get(cause, "our own configuration or credentials are refused")


class Consumer:
    """Consumes ``queue`` (and the ``lane``, when there is one) until ``stop()``; reconnects
    with jittered backoff after any broker failure. On stop: cancel the consumers, finish the
    work already received (up to ``drain_seconds``), then close; unfinished deliveries return
    to their queue."""

    def __init__(
        self,
        parameters: pika.URLParameters,
        queue: str,
        process: Callable[[Delivery], None],
        *,
        prefetch: int,
        concurrency: int,
        drain_seconds: float,
        policy: LanePolicy | None = None,
        lane: Lane | None = None,
        pause_seconds: float = 30.0,
        max_message_bytes: int = MAX_BYTES,
        on_move: Callable[[str], None] = lambda result: None,
    ) -> None:
        self._parameters = parameters
        self._queue = queue
        self._prefetch = prefetch
        self._drain_seconds = drain_seconds
        self.dispatcher = Dispatcher(
            process,
            concurrency=concurrency,
            policy=policy or LanePolicy(lane=lane is not None),
            live=self._live,
            requeue=partial(self.nack, requeue=True),
            max_message_bytes=max_message_bytes,
        )
        self._lane = lane
        self._mover: LaneMover | None = None
        if lane is not None:
            hooks = MoveHooks(self.ack, self._live, on_move)
            self._mover = LaneMover(lane, self.dispatcher, hooks, off_seconds=pause_seconds)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._tags: list[str] = []  # our consumers on the current channel (I/O thread only)
        self._paused_since: str | None = None  # the cause that cancelled us (I/O thread only)
        self._paused_until = 0.0
        self._pause_cause = ""
        # Settlements wait here for the I/O thread, which takes them all in one wake-up.
        self._settlements: list[Settlement] = []
        # Delivery tags of the current channel not yet settled, oldest first (I/O thread only).
        self._unsettled: dict[int, None] = {}
        self._flush_scheduled = False
        self.consuming = False

    @property
    def paused(self) -> bool:
        """True while consumption is paused (see ``pause``)."""
        return self.pause_cause is not None

    @property
    def pause_cause(self) -> str | None:
        """The cause code of the pause in force, or None while consuming."""
        with self._lock:
            return self._pause_cause if time.monotonic() < self._paused_until else None

    @property
    def in_flight(self) -> int:
        """Deliveries received and not finished: waiting, in progress or being moved."""
        return self.dispatcher.in_flight

    def run(self) -> None:
        """Serve until ``stop()``. Never raises for broker failures; it reconnects."""
        self.dispatcher.start()
        if self._mover is not None:
            self._mover.start()
        try:
            self._reconnecting()
        finally:
            self.dispatcher.stop()
            if self._mover is not None:
                self._mover.stop()

    def _reconnecting(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._serve()
                delay = 0.5
            except (AMQPError, OSError) as exc:
                self.consuming = False
                wait = delay * (0.5 + random.random() / 2)
                log.warning(
                    "broker connection lost; reconnecting",
                    extra={"error": type(exc).__name__, "retry_in_s": round(wait, 2)},
                )
                self._stop.wait(wait)
                delay = min(delay * 2, 30.0)

    def stop(self) -> None:
        """Thread- and signal-safe: ask ``run`` to drain and return."""
        self._stop.set()

    def ack(self, delivery: Delivery) -> None:
        self._settle(Settlement(delivery.generation, delivery.delivery_tag, ack=True))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        tag = delivery.delivery_tag
        self._settle(Settlement(delivery.generation, tag, ack=False, requeue=requeue))

    def pause(self, seconds: float, cause: str) -> None:
        """Stop receiving for ``seconds`` because of ``cause`` (a reason code: our credentials
        or TLS refused, a copy unroutable); messages stay in the queue instead of being burnt
        through. The latest cause is the one reported. The consumer is cancelled before any
        settlement queued after this call is sent, so a requeued message is not redelivered
        to this consumer at once."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self._pause_cause = cause

    def _serve(self) -> None:
        connection = pika.BlockingConnection(self._parameters)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self._prefetch)
        with self._lock:
            self._generation += 1
            self._connection, self._channel = connection, channel
            # What was queued for the old channel is void (the broker requeued it); a flush
            # scheduled on the old connection will never run.
            self._settlements, self._flush_scheduled = [], False
        self._unsettled = {}
        self._tags = []  # consumer tags die with their channel
        try:
            self._loop(connection, channel)
            self._drain(connection, channel)
        finally:
            self.consuming = False
            with self._lock:
                self._connection = self._channel = None
            if connection.is_open:
                connection.close()

    def _loop(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        log.info("consuming", extra={"queue": self._queue, "prefetch": self._prefetch})
        while not self._stop.is_set():
            cause = self.pause_cause
            if cause is not None and self._tags:
                self._pause_now(channel, cause)
            elif cause is None and not self._tags and self.dispatcher.ready():
                if self._paused_since is not None:
                    log.info("consumption resumed", extra={"cause": self._paused_since})
                    self._paused_since = None
                lane = self._lane.queue if self._lane else None
                self._tags = subscribe(connection, channel, self._queue, lane, self._on_message)
                self.consuming = True
            connection.process_data_events(time_limit=0.25)

    def _pause_now(self, channel: BlockingChannel, cause: str) -> None:
        log.error(
            f"consumption paused ({cause}): {pause_explanation(cause)}",
            extra={"cause": cause, "queue": self._queue},
        )
        self._paused_since = cause
        self._cancel(channel)

    def _cancel(self, channel: BlockingChannel) -> None:
        # basic_cancel nacks (requeues) deliveries not yet dispatched to our callback.
        for tag in self._tags if channel.is_open else ():
            channel.basic_cancel(tag)
        self._tags = []
        self.consuming = False

    def _drain(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self._cancel(channel)
        deadline = time.monotonic() + self._drain_seconds
        while self.in_flight and time.monotonic() < deadline and connection.is_open:
            connection.process_data_events(time_limit=0.1)
        if connection.is_open:
            # Acks are queued before in_flight drops: run the callbacks still pending.
            connection.process_data_events(time_limit=0)
        if self.in_flight:
            log.warning(
                "drain timed out; unfinished messages return to the queue",
                extra={"in_flight": self.in_flight},
            )

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
        *,
        lane: bool = False,
    ) -> None:
        delivery = delivery_from(method, properties, body, self._generation)
        self._unsettled[delivery.delivery_tag] = None
        self.dispatcher.receive(delivery, from_lane=lane)

    def _live(self, delivery: Delivery) -> bool:
        """Whether ``delivery``'s channel is the open one (else the broker requeued it)."""
        with self._lock:
            return self._connection is not None and delivery.generation == self._generation

    def _settle(self, settlement: Settlement) -> None:
        with self._lock:
            connection, generation = self._connection, self._generation
            if connection is None or generation != settlement.generation:
                return  # the old channel is gone: the broker has already requeued it
            self._settlements.append(settlement)
            if self._flush_scheduled:
                return  # the I/O thread has a flush coming that will take this one too
            self._flush_scheduled = True
        try:
            # One wake-up of the I/O thread per batch, not per message.
            connection.add_callback_threadsafe(self._flush_settlements)
        except (AMQPError, OSError, RuntimeError) as exc:
            with self._lock:
                self._flush_scheduled = False
            log.info(
                "settle dropped; the broker will redeliver", extra={"error": type(exc).__name__}
            )

    def _flush_settlements(self) -> None:
        """Runs on the I/O thread: send every queued ack or nack of the current channel, the
        acks of the oldest deliveries as one ``multiple`` ack (one frame, one flush)."""
        with self._lock:
            pending, self._settlements = self._settlements, []
            self._flush_scheduled = False
            channel, generation = self._channel, self._generation
        if channel is None or not channel.is_open:
            return
        cause = self.pause_cause
        if cause is not None and self._tags:
            # A pause asked for before these settlements: cancel first, so a requeued message
            # waits in the queue instead of coming straight back to us (a hot loop).
            self._pause_now(channel, cause)
        acks.send(channel, pending, generation, self._unsettled)
