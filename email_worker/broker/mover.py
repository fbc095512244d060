"""Moving low-priority deliveries to the bulk lane, many at a time (CONTRACT section 13).

A move is a confirmed, mandatory publish of the same body and properties (``copy_properties``:
persistent, headers and priority kept, no expiration) to the lane by name through the default
exchange, then the ack of the original: the original is acked only once its copy was confirmed
AND routed (RELIABILITY rules 1 and 3). A move that fails keeps the original, which is then
processed here (handed back to the backlog), and moves stay off for ``PAUSE_SECONDS``. A crash
between the confirm and the ack leaves two copies; the ledger deduplicates them by request_id.

Why an asynchronous connection (pika's ``SelectConnection``, on a thread of its own) when the
rest of the worker publishes with ``BlockingConnection``: a blocking confirmed publish waits for
its confirm before the next one starts, and every wait hands the GIL to the worker threads;
behind 32 busy threads that was 88 moves a second (measured), so 1,500 bulk messages hid a
high-priority one for 17 s. Here copies go out back to back and are settled as the broker
confirms them, in publish order, so the lane holds them in the order the email queue delivered
them (one publishing channel). The same thread reads the lane's depth while the lane may hold
messages (``priority.LaneState``), so the intake knows when a later low-priority message may
stay local again without overtaking one in the lane; and, while the worker has a backlog, the
email queue's depth and this process's send rate (``PRIORITY_LANE_SECONDS``), so that a backlog
sent within that time anyway is not moved twice through the broker (``depths.py``).

Hazards handled here:
- Everything but ``submit`` and ``stop`` runs on the mover's ioloop thread: pika objects are
  not thread-safe.
- A ``basic.return`` does not say which publish it returns. It comes before the confirm of that
  message, so every move in flight when it arrives counts as failed: its original is kept, and
  a copy that did reach the lane is a duplicate the ledger absorbs.
- A lost connection leaves the moves in flight unconfirmed: they fail the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import pika
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.channel import Channel
from pika.exceptions import AMQPError

from email_worker.broker.depths import DepthReader
from email_worker.broker.dispatch import Dispatcher, Received
from email_worker.broker.lane import Lane, MoveHooks
from email_worker.broker.publisher import NACKED, UNREACHABLE, UNROUTABLE, copy_properties
from email_worker.priority import SendRate, backlog_is_deep

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 512  # copies published and not yet confirmed
TICK_SECONDS = 0.1  # how often the depths that matter are read (lane, email queue backlog)
LANE_OFF = "lane_off"  # an earlier failure turned moves off: no copy is even tried


class LaneMover:
    """Moves what the dispatcher submits (it attaches itself to the dispatcher)."""

    def __init__(
        self, lane: Lane, dispatcher: Dispatcher, hooks: MoveHooks, *, off_seconds: float
    ) -> None:
        self._lane, self._dispatcher, self._hooks = lane, dispatcher, hooks
        self._state = dispatcher.lane
        self._off_seconds = off_seconds
        self._ioloop: Any = None  # made by ``start``, closed by ``stop`` (it holds a socket pair)
        self._items: deque[Received] = deque()  # submitted, not yet published
        self._in_flight: dict[int, Received] = {}  # by publish number, ascending
        self._suspect: set[int] = set()  # in flight when a basic.return came
        self._published = 0
        self._connection: SelectConnection | None = None
        self._channel: Channel | None = None
        self._depths = DepthReader()
        self._rate = SendRate()
        self._missing = False
        self._stopping = False
        self._delay = 0.5
        self._thread: threading.Thread | None = None
        dispatcher.attach(self)

    def submit(self, item: Received) -> None:
        """Any thread; never blocks."""
        self._items.append(item)  # deque.append is atomic
        ioloop = self._ioloop
        if ioloop is not None:  # else the first channel pumps it
            ioloop.add_callback_threadsafe(self._pump)

    def start(self) -> None:
        self._ioloop = IOLoop()
        self._stopping = False
        self._ioloop.add_callback_threadsafe(self._connect)
        self._ioloop.call_later(TICK_SECONDS, self._tick)
        self._thread = threading.Thread(target=self._run, name="email-worker-lane")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Close the connection (moves in flight fail: after the consumer's drain they belong
        to a channel that is gone); what was never published is finished unmoved."""
        if self._thread is not None:
            self._ioloop.add_callback_threadsafe(self._shut_down)
            self._thread.join()
            self._thread = None
            self._ioloop.close()
        while self._items:
            self._finish(self._items.popleft(), moved=False)

    def _run(self) -> None:
        while True:
            try:
                self._ioloop.start()
                return
            except Exception:  # a bug: the mover must not die with messages in its hands
                log.exception("the priority lane mover failed; it carries on")
                self._abandon("error")
                if self._connection is None:
                    self._ioloop.call_later(self._delay, self._connect)

    # Connection (ioloop thread).
    def _connect(self) -> None:
        if self._stopping:
            return
        try:
            self._connection = SelectConnection(
                self._lane.parameters,
                on_open_callback=lambda connection: connection.channel(
                    on_open_callback=self._channel_opened
                ),
                on_open_error_callback=lambda _, error: self._lost(type(error).__name__),
                on_close_callback=lambda _, reason: self._lost(type(reason).__name__),
                custom_ioloop=self._ioloop,
            )
        except (AMQPError, OSError, ValueError) as exc:
            self._lost(type(exc).__name__)

    def _channel_opened(self, channel: Channel) -> None:
        channel.add_on_close_callback(self._channel_closed)
        channel.add_on_return_callback(self._returned)
        channel.confirm_delivery(self._confirmed, callback=lambda _: self._ready(channel))

    def _ready(self, channel: Channel) -> None:
        self._channel, self._published, self._delay = channel, 0, 0.5
        self._read_depth()  # at once: consumption waits for it at start-up
        self._pump()

    def _channel_closed(self, channel: Channel, reason: Exception) -> None:
        if channel is self._channel and self._connection is not None:
            self._channel = None
            if self._connection.is_open:  # a channel error: start afresh
                self._connection.close()

    def _lost(self, cause: str) -> None:
        """The connection failed to open or closed: every move in flight or waiting fails;
        connect again after a backoff (or stop the ioloop when stopping)."""
        self._connection = self._channel = None
        self._depths.reset()
        self._abandon(cause)
        if self._stopping:
            self._ioloop.stop()
            return
        self._ioloop.call_later(self._delay, self._connect)
        self._delay = min(self._delay * 2, 30.0)

    def _abandon(self, cause: str) -> None:
        failed = list(self._in_flight.values())
        self._in_flight.clear()
        self._suspect.clear()
        while self._items:  # one at a time: ``submit`` may append meanwhile
            failed.append(self._items.popleft())
        for item in failed:
            self._fail(item, UNREACHABLE, cause)

    def _shut_down(self) -> None:
        self._stopping = True
        connection = self._connection
        if connection is None or connection.is_closed:
            self._ioloop.stop()
        elif not connection.is_closing:
            connection.close()  # _lost then stops the ioloop

    # Moves (ioloop thread).
    def _pump(self) -> None:
        while self._items:
            if not self._state.open:
                self._fail(self._items.popleft(), LANE_OFF)
                continue
            channel = self._channel
            if channel is None or len(self._in_flight) >= MAX_IN_FLIGHT:
                return  # the next channel, or the next confirm, pumps again
            item = self._items.popleft()
            delivery = item.delivery
            if not self._hooks.live(delivery):  # its channel is gone: the broker requeued it
                self._finish(item, moved=False)
                continue
            properties = copy_properties(delivery.properties, {})
            try:
                channel.basic_publish("", self._lane.queue, delivery.body, properties, True)
            except AMQPError as exc:  # the channel is closing: its close callback follows
                self._fail(item, UNREACHABLE, type(exc).__name__)
                return
            self._published += 1
            self._in_flight[self._published] = item

    def _returned(self, *_: Any) -> None:
        self._suspect.update(self._in_flight)

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        tag: int = method.delivery_tag
        numbers = [n for n in self._in_flight if n <= tag] if method.multiple else [tag]
        for number in numbers:
            item = self._in_flight.pop(number, None)
            if item is None:
                continue
            if nacked or number in self._suspect:
                self._suspect.discard(number)
                self._fail(item, NACKED if nacked else UNROUTABLE)
            else:
                self._hooks.ack(item.delivery)  # queued before ``finished``: a drain sends it
                self._finish(item, moved=True)
        self._pump()

    def _finish(self, item: Received, *, moved: bool) -> None:
        self._state.settled(moved=moved)
        if moved:
            self._hooks.counted("moved")
        self._dispatcher.finished(item)

    def _fail(self, item: Received, cause: str, detail: str = "") -> None:
        if cause != LANE_OFF:
            opened = self._state.open
            # Off before ``settled``: the intake's next decision must already see it.
            self._state.turn_off(self._off_seconds)
            if opened:
                log.warning(
                    "could not move messages to the priority lane: they are processed here, "
                    "and moves stay off for a while",
                    extra={"cause": cause, "error": detail, "queue": self._lane.queue},
                )
        self._state.settled(moved=False)
        self._hooks.counted("failed")
        self._dispatcher.hand_back(item)

    # Depths (ioloop thread).
    def _tick(self) -> None:
        if self._stopping:
            return
        self._ioloop.call_later(TICK_SECONDS, self._tick)
        self._read_depth()
        self._weigh_backlog()

    def _read_depth(self) -> None:
        if self._state.needs_depth():
            started = self._state.depth_read_started()
            self._depths.read(
                self._connection,
                self._lane.queue,
                lambda ready, _: self._lane_depth(started, ready),
                self._lane_missing,
            )

    def _lane_depth(self, started: int, ready: int) -> None:
        self._missing = False
        self._state.depth_read(started, ready)

    def _lane_missing(self) -> None:
        self._state.turn_off(self._off_seconds)
        if not self._missing:
            log.error(
                "the priority lane queue is missing: low-priority messages stay in the "
                "email queue's order until it exists (email-worker topology apply)",
                extra={"queue": self._lane.queue},
            )
        self._missing = True

    def _weigh_backlog(self) -> None:
        """While the worker holds a backlog, read the email queue's depth and tell the intake
        whether it is deep (``priority.backlog_is_deep``); otherwise it is not."""
        rate = self._rate.sample(time.monotonic(), self._dispatcher.processed)
        policy = self._dispatcher.policy
        # While the lane may hold messages every low-priority one follows them, deep or not:
        # nothing to read, and once it is empty moves wait for a fresh reading.
        weighed = self._lane.source and policy.weighs_backlog(self._dispatcher.window)
        if not weighed or self._state.busy:
            self._state.set_deep(False)
            return

        def answered(ready: int, consumers: int) -> None:
            self._state.set_deep(backlog_is_deep(ready, consumers, rate, policy.seconds))

        self._depths.read(
            self._connection, self._lane.source, answered, lambda: self._state.set_deep(False)
        )
