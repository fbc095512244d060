"""The RabbitMQ consumer: pika on one I/O thread, the work on a thread pool.

Hazards this module exists to handle (RELIABILITY rules 1-5):
- pika is not thread-safe and heartbeats are only answered while the I/O thread runs
  ``process_data_events``. Blocking it past the heartbeat drops the connection and redelivers
  the message (a duplicate email), so SMTP and HTTP run on worker threads and every ack goes
  back through ``add_callback_threadsafe``.
- Acks belong to one channel. After a reconnect, a late ack for a delivery of the old channel
  must be dropped (the broker has already requeued it); each delivery carries its generation.
- Prefetch is per consumer (global QoS on a quorum queue closes the connection on 3.10).
- An ack with ``multiple`` covers every earlier unsettled delivery of the channel, so it is only
  used up to the oldest delivery still being worked on (``acks.coalesce_acks``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError
from pika.spec import Basic

from email_worker.broker.acks import Settlement, coalesce_acks
from email_worker.broker.delivery import delivery_from
from email_worker.ports import Delivery

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
    """Consumes ``queue`` until ``stop()``; reconnects with jittered backoff after any broker
    failure. On stop: cancel the consumer, finish the work already received (up to
    ``drain_seconds``), then close; unfinished deliveries return to the queue."""

    def __init__(
        self,
        parameters: pika.URLParameters,
        queue: str,
        process: Callable[[Delivery], None],
        *,
        prefetch: int,
        concurrency: int,
        drain_seconds: float,
    ) -> None:
        self._parameters = parameters
        self._queue = queue
        self._process = process
        self._prefetch = prefetch
        self._drain_seconds = drain_seconds
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="email-worker")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._generation = 0
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._tag: str | None = None
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
        with self._lock:
            return self._in_flight

    def run(self) -> None:
        """Serve until ``stop()``. Never raises for broker failures; it reconnects."""
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
        self._executor.shutdown(wait=True)

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
        self._tag = None  # a consumer tag dies with its channel
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
            if cause is not None and self._tag is not None:
                self._pause_now(channel, cause)
            elif cause is None and self._tag is None:
                if self._paused_since is not None:
                    log.info("consumption resumed", extra={"cause": self._paused_since})
                    self._paused_since = None
                self._tag = channel.basic_consume(self._queue, self._on_message)
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
        if self._tag is not None and channel.is_open:
            channel.basic_cancel(self._tag)
        self._tag = None
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
    ) -> None:
        delivery = delivery_from(method, properties, body, self._generation)
        self._unsettled[delivery.delivery_tag] = None
        with self._lock:
            self._in_flight += 1
        self._executor.submit(self._run, delivery)

    def _run(self, delivery: Delivery) -> None:
        try:
            self._process(delivery)
        except Exception:
            # The processor settles every message itself; reaching here is a bug. Requeue so
            # nothing is lost; the delivery limit catches a message that keeps doing this.
            log.exception("unhandled error while processing a message")
            self.nack(delivery, requeue=True)
        finally:
            with self._lock:
                self._in_flight -= 1

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
        if cause is not None and self._tag is not None:
            # A pause asked for before these settlements: cancel first, so a requeued message
            # waits in the queue instead of coming straight back to us (a hot loop).
            self._pause_now(channel, cause)
        acks: set[int] = set()
        for settlement in pending:
            if settlement.generation != generation:
                continue
            if settlement.ack:
                acks.add(settlement.tag)
            else:  # before the acks: a nacked tag is then no longer covered by a multiple ack
                channel.basic_nack(settlement.tag, requeue=settlement.requeue)
                self._unsettled.pop(settlement.tag, None)
        upto, singles = coalesce_acks(self._unsettled, acks)
        if upto is not None:
            channel.basic_ack(upto, multiple=True)
        for tag in singles:
            channel.basic_ack(tag)
        for tag in acks:
            self._unsettled.pop(tag, None)
