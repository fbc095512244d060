"""Priority at intake (CONTRACT section 13): a delivery's priority, read before it is parsed,
and the rule that sends a low-priority one to the bulk lane.

A delivery's priority is the higher of the body's ``priority`` (0-10, an integer or a numeric
string, at the top level or inside the envelopes ``schemas.inbound.parse_message`` peels) and
the AMQP ``priority`` property, as ``Pipeline.attempt`` computes it for the pacer. It is read on
pika's I/O thread for every delivery, so the read is cheap and total: a body that holds neither
the word ``priority`` nor a ``\\u`` escape (the only ways to spell the key) is not decoded at
all; a larger body than the size limit, or one that is not JSON, counts as 0 (``parse_message``
refuses it later anyway); decoding is the C JSON scanner (linear time), and a hostile nesting
depth ends in ``RecursionError``, which counts as 0 too.

``LanePolicy.moves`` is the one move rule (pure); ``LaneState`` is what the worker knows about
its lane, shared by the intake (pika's I/O thread) and the mover's thread; ``SendRate`` and
``backlog_is_deep`` say whether the email queue's backlog is deep enough for a move to matter
(``PRIORITY_LANE_SECONDS``, docs/priority.md).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from schemas.inbound import MAX_BYTES, MAX_ENVELOPES, PRIORITY_PATTERN

MAX_AMQP_PRIORITY = 255  # an AMQP priority is an octet
# parse_message's envelope rule: an object without a request id of its own, with a marker and
# an object under "data", is an envelope (schemas/inbound.py, ``_unwrap``).
_ENVELOPE_MARKERS = ("pattern", "success")
_ID_KEYS = ("request_id", "requestId")
_PRIORITY = re.compile(PRIORITY_PATTERN)


def body_priority(body: bytes, *, max_bytes: int = MAX_BYTES) -> int | None:
    """The body's ``priority`` as ``parse_message`` would read it, or None (absent, invalid,
    unreadable). Never raises; linear time; decodes nothing larger than ``max_bytes``."""
    if len(body) > max_bytes or (b"priority" not in body and b"\\u" not in body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return _valid(_message(value).get("priority"))


def delivery_priority(body: bytes, amqp_priority: object, *, max_bytes: int = MAX_BYTES) -> int:
    """The higher of the body's priority and the AMQP ``priority`` property; 0 when neither
    is usable. Never raises."""
    amqp = amqp_priority if type(amqp_priority) is int else 0
    amqp = min(max(amqp, 0), MAX_AMQP_PRIORITY)
    return max(body_priority(body, max_bytes=max_bytes) or 0, amqp)


def _message(value: object) -> dict[str, object]:
    """The message object inside at most ``MAX_ENVELOPES`` envelopes; {} when none."""
    for _ in range(MAX_ENVELOPES):
        if not isinstance(value, dict) or any(key in value for key in _ID_KEYS):
            break
        data = value.get("data")
        if not isinstance(data, dict) or not any(m in value for m in _ENVELOPE_MARKERS):
            break
        value = data
    return value if isinstance(value, dict) else {}


def _valid(value: object) -> int | None:
    if type(value) is int:
        return value if 0 <= value <= 10 else None
    if isinstance(value, str) and _PRIORITY.match(value):
        return int(value)
    return None


@dataclass(frozen=True)
class LanePolicy:
    """``high``: ``PRIORITY_HIGH``; ``threshold``: unfinished deliveries from the email queue
    past which low-priority ones may move; ``lane``: whether a lane exists at all;
    ``seconds``: ``PRIORITY_LANE_SECONDS``, how long the email queue's backlog may take to
    send before moves start (0: whenever the threshold is reached)."""

    high: int = 5
    threshold: int = 32
    lane: bool = True
    seconds: float = 0.0

    def is_high(self, priority: int) -> bool:
        return priority >= self.high

    def weighs_backlog(self, window: int) -> bool:
        """Whether the email queue's depth must be read to decide (``deep`` of ``moves``)."""
        return self.lane and self.seconds > 0 and window >= self.threshold

    def moves(
        self, priority: int, *, window: int, lane_busy: bool, lane_open: bool, deep: bool = True
    ) -> bool:
        """Whether a delivery from the email queue moves to the lane. Never a high-priority
        one, and never while moves are off (no lane, or a move just failed). Otherwise: when
        the lane may still hold messages (a later message must follow them there: first in,
        first out), or when the worker holds ``threshold`` unfinished deliveries from the
        email queue (``window``: it has a backlog) and, with ``seconds``, the email queue
        holds more than that many seconds of sending (``deep``: a high-priority message
        published now would wait longer than that behind it; below, it is seen soon enough
        without moving the backlog twice through the broker)."""
        if not (self.lane and lane_open) or self.is_high(priority):
            return False
        if lane_busy:
            return True
        return window >= self.threshold and (deep or self.seconds <= 0)


# ``SendRate``: the rate over each RATE_WINDOW seconds (over less, only once MIN_DONE
# deliveries finished in at least MIN_SPAN seconds), the highest of the last RATE_MEMORY.
RATE_WINDOW = 1.0
RATE_MEMORY = 5.0
MIN_SPAN = 0.1
MIN_DONE = 4


class SendRate:
    """The pace at which a process finishes deliveries, from samples of its running count
    (one thread samples it: not thread-safe). The highest rate of the last few seconds: a
    pause (a slow moment of the relay, the database or the machine) must not make a backlog
    look deep for a moment, since the first move drags every later low-priority message into
    the lane. Measured from the first delivery finished: the ones before (connections
    opening, caches filling) say nothing of the pace."""

    def __init__(self, window: float = RATE_WINDOW, memory: float = RATE_MEMORY) -> None:
        self._window, self._memory = window, memory
        self._samples: deque[tuple[float, int]] = deque()
        self._rates: deque[tuple[float, float]] = deque()

    def sample(self, now: float, done: int) -> float | None:
        """Add ``done`` (finished so far) at ``now``; the highest rate of the last
        ``memory`` seconds, or None while unknown (too few finished in too short a time)."""
        if done == 0:
            return None
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        then, before = samples[0]
        elapsed, finished = now - then, done - before
        if elapsed >= self._window or (elapsed >= MIN_SPAN and finished >= MIN_DONE):
            self._rates.append((now, finished / elapsed))
        while self._rates and now - self._rates[0][0] > self._memory:
            self._rates.popleft()
        return max((rate for _, rate in self._rates), default=None)


def backlog_is_deep(ready: int, consumers: int, rate: float | None, seconds: float) -> bool:
    """Whether ``ready`` messages in the email queue take longer than ``seconds`` to send when
    each of its ``consumers`` (this process among them) sends ``rate`` a second. An unknown
    rate (start-up) is not deep: moving a backlog on a guess would move all of it, since every
    later low-priority message follows the first into the lane."""
    if rate is None:
        return False
    if rate <= 0:
        return ready > 0
    return ready > seconds * rate * max(1, consumers)


class LaneState:
    """What the worker knows about its lane (thread-safe).

    The lane counts as possibly holding ready messages (``busy``) while moves are queued or in
    progress, and until a depth read that began after the last confirmed move finds it empty;
    at start-up it is unknown, so busy (it may hold messages from before a restart) until the
    first depth read (``known``). Moves are off until ``open`` again after a failed move or a
    missing lane."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._moves = 0  # confirmed moves: a depth read is valid only if none came since
        self._empty = False
        self._known = False
        self._off_until = float("-inf")
        self._deep = False

    @property
    def known(self) -> bool:
        """Whether a depth read answered (or moves were turned off) since start-up."""
        with self._lock:
            return self._known

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._pending > 0 or not self._empty

    @property
    def deep(self) -> bool:
        """The email queue's backlog is deep (``backlog_is_deep``) at the latest reading."""
        with self._lock:
            return self._deep

    def set_deep(self, deep: bool) -> None:
        with self._lock:
            self._deep = deep

    @property
    def open(self) -> bool:
        with self._lock:
            return self._clock() >= self._off_until

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submitted(self) -> None:
        with self._lock:
            self._pending += 1

    def settled(self, *, moved: bool) -> None:
        """A queued move ended: ``moved`` when its copy was confirmed and routed."""
        with self._lock:
            self._pending -= 1
            if moved:
                self._moves += 1
                self._empty = False

    def turn_off(self, seconds: float) -> None:
        with self._lock:
            self._off_until = max(self._off_until, self._clock() + seconds)
            self._known = True

    def needs_depth(self) -> bool:
        """True when only a depth read can tell whether the lane is empty."""
        with self._lock:
            return self._pending == 0 and not self._empty

    def depth_read_started(self) -> int:
        with self._lock:
            return self._moves

    def depth_read(self, started: int, ready: int) -> None:
        """The lane held ``ready`` messages at a read begun when ``depth_read_started``
        returned ``started``; an empty answer counts only if no move was confirmed since."""
        with self._lock:
            self._empty = ready == 0 and started == self._moves
            self._known = True
