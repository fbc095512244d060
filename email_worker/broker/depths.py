"""Reading queue depths on the mover's asynchronous connection (``mover.py``): the lane's (may
it still hold messages?) and the email queue's (is its backlog deep enough for moves to
matter? ``priority.backlog_is_deep``).

A read is a passive ``queue.declare`` on a channel of its own, closed after the answer: a
missing queue closes that channel (404) and never the one that publishes the moves. One read
per queue at a time; a read whose channel closes for any other reason answers nothing, and the
next tick reads again. Everything here runs on the mover's ioloop thread (pika objects are not
thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker

# (ready messages, consumers) of a queue that answered.
Answered = Callable[[int, int], None]


class DepthReader:
    """Passive declares, one at a time per queue, on ``connection`` channels."""

    def __init__(self) -> None:
        self._reading: set[str] = set()

    def reset(self) -> None:
        """The connection is gone, and every read in progress with it."""
        self._reading.clear()

    def read(
        self, connection: Any, queue: str, answered: Answered, missing: Callable[[], None]
    ) -> None:
        """Ask for ``queue``'s depth: ``answered(ready, consumers)``, or ``missing()`` when the
        broker says it does not exist. Nothing when a read of ``queue`` is in progress or the
        connection is not open."""
        if queue in self._reading or connection is None or not connection.is_open:
            return
        self._reading.add(queue)
        connection.channel(on_open_callback=partial(self._declare, queue, answered, missing))

    def _declare(
        self, queue: str, answered: Answered, missing: Callable[[], None], channel: Channel
    ) -> None:
        def closed(_: Channel, reason: Exception) -> None:
            if queue not in self._reading:
                return  # closed by us after the answer
            self._reading.discard(queue)
            if isinstance(reason, ChannelClosedByBroker) and reason.reply_code == 404:
                missing()

        def declared(frame: Any) -> None:
            self._reading.discard(queue)
            answered(int(frame.method.message_count), int(frame.method.consumer_count))
            channel.close()

        channel.add_on_close_callback(closed)
        channel.queue_declare(queue, passive=True, callback=declared)
