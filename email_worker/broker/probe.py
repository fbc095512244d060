"""Reading what exists on the broker over plain AMQP (no management plugin needed).

AMQP has no call that returns a queue's arguments, but RabbitMQ names the first argument that
differs when a declaration is not equivalent: ``406 PRECONDITION_FAILED - inequivalent arg
'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '60000' of
type 'signedint'`` (texts checked on 3.10.8). ``learn_queue`` starts from an empty argument
table and adds what each 406 names until the declaration passes: the result is exactly the
arguments the broker compares (every ``x-`` argument it knows; an unknown ``x-custom`` is never
compared, so never seen).

Hazards handled here:
- A 404, 405 or 406 closes the channel: every check runs on a throw-away channel.
- A probe is an active declare and would CREATE a queue deleted between the passive check and
  the probe. Each probe therefore carries ``x-max-age`` with an invalid value: a stream-only
  argument that classic and quorum queues do not compare when the queue exists, but refuse
  ("invalid arg") when the declare would create one. So a probe never creates anything.
- Some broker errors close the whole connection (a malformed argument: 541, an unknown exchange
  type: 503); ``Channels`` reconnects for the next check.
- The reply text is an AMQP short string (255 bytes, truncated with "..."); a reply that cannot
  be read ends the probe with what was learned so far (``complete=False``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

# Refused on creation by classic and quorum queues; not compared on an existing one.
PROBE_GUARD = {"x-max-age": "email-worker-probe"}
MAX_PROBES = 32
_INTEGER_TYPES = frozenset(
    {"byte", "short", "signedint", "long", "unsignedbyte", "unsignedshort", "unsignedint"}
)
_STRING_TYPES = frozenset({"longstr", "shortstr"})
ArgumentValue = str | int | bool


class _ExpectedCloses(logging.Filter):
    """Drops pika's WARNING for a channel closed while this thread runs a check: a 404 or a
    406 is the answer a check asks for, not a fault."""

    def __init__(self) -> None:
        super().__init__()
        self.checking = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.checking, "on", False)


_QUIET = _ExpectedCloses()
logging.getLogger("pika.channel").addFilter(_QUIET)


@dataclass(frozen=True)
class Inequivalence:
    """What one 406 says: ``argument`` differs; the queue has ``current`` (None: absent)."""

    argument: str
    current: str | None
    current_type: str | None  # the AMQP type name when the reply gave one


def parse_inequivalence(text: str) -> Inequivalence | None:
    """Read an ``inequivalent arg`` reply; None for any other text. Never raises; linear time.

    The current value is taken from the first `` but current is `` on: our own value (the
    received one) never holds that text, the broker's may, and the current value ends the text.
    """
    head = "inequivalent arg '"
    start = text.find(head)
    if start < 0:
        return None
    start += len(head)
    end = text.find("'", start)
    marker = text.find(" but current is ", end)
    if end < 0 or marker < 0:
        return None
    current = text[marker + len(" but current is ") :]
    argument = text[start:end]
    if current == "none":
        return Inequivalence(argument, None, None)
    typed = _typed_value(current)
    if typed is not None:
        return Inequivalence(argument, typed[0], typed[1])
    if len(current) >= 2 and current[0] == "'" and current[-1] == "'":
        return Inequivalence(argument, current[1:-1], None)
    return None


def _typed_value(text: str) -> tuple[str, str] | None:
    """``the value 'V' of type 'T'`` as (V, T), else None."""
    prefix = "the value '"
    if not text.startswith(prefix) or not text.endswith("'"):
        return None
    cut = text.rfind("' of type '")
    if cut < len(prefix) - 1:
        return None
    type_name = text[cut + len("' of type '") : -1]
    if not type_name.isalpha():
        return None
    return text[len(prefix) : cut], type_name


def argument_value(found: Inequivalence) -> ArgumentValue | None:
    """The Python value pika encodes as the broker's current value, or None when pika cannot
    reproduce it (floats, tables, arrays, timestamps, decimals) or the type was not given."""
    value, kind = found.current, found.current_type
    if value is None or kind is None:
        return None
    if kind in _STRING_TYPES:
        return value
    if kind == "bool" and value in ("true", "false"):
        return value == "true"
    if kind in _INTEGER_TYPES:
        try:
            return int(value)
        except ValueError:
            return None
    return None


class Channels:
    """Throw-away channels on one connection, reopened when the broker closed it."""

    def __init__(self, connect: Callable[[], BlockingConnection]) -> None:
        self._connect = connect
        self._connection: BlockingConnection | None = None

    def channel(self) -> BlockingChannel:
        if self._connection is None or not self._connection.is_open:
            self._connection = self._connect()
        return self._connection.channel()

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._connection = None


@dataclass(frozen=True)
class Refusal:
    code: int
    text: str


def attempt(channels: Channels, action: Callable[[BlockingChannel], object]) -> Refusal | None:
    """Run ``action`` on a fresh channel; the broker's refusal, or None when it passed."""
    channel = channels.channel()
    _QUIET.checking.on = True
    try:
        action(channel)
    except (ChannelClosedByBroker, ConnectionClosedByBroker) as exc:
        return Refusal(exc.reply_code, exc.reply_text)
    finally:
        _QUIET.checking.on = False
    if channel.is_open:
        channel.close()
    return None


@dataclass
class QueueFound:
    """A queue as found: ``exists`` False means a 404. ``arguments`` are those the broker
    compares; ``complete`` is False when the probe stopped early (``note`` says why)."""

    name: str
    exists: bool
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
    auto_delete: bool = False
    complete: bool = True
    note: str = ""
    refusal: Refusal | None = None  # a passive check the broker refused otherwise than 404

    @property
    def queue_type(self) -> str:
        return str(self.arguments.get("x-queue-type", "classic"))


def queue_found(channels: Channels, name: str, *, learn: bool = True) -> QueueFound:
    """Whether ``name`` exists (passive declare) and, with ``learn``, its arguments."""
    refusal = attempt(channels, lambda ch: ch.queue_declare(name, passive=True))
    if refusal is not None:
        if refusal.code == 404:
            return QueueFound(name, exists=False)
        return QueueFound(name, True, complete=False, note=refusal.text, refusal=refusal)
    found = QueueFound(name, exists=True, complete=False, note="arguments not read")
    return learn_queue(channels, found) if learn else found


def learn_queue(channels: Channels, found: QueueFound) -> QueueFound:
    """Probe the arguments of a queue that exists (see the module docstring)."""
    learned = QueueFound(found.name, True)
    last = ""
    for _ in range(MAX_PROBES):
        refusal = attempt(channels, _probe(learned))
        if refusal is None:
            return learned
        ineq = parse_inequivalence(refusal.text) if refusal.code == 406 else None
        if ineq is None or ineq.argument == last or ineq.argument in PROBE_GUARD:
            return _stopped(learned, refusal.text)
        last = ineq.argument
        if ineq.argument in ("durable", "auto_delete"):
            setattr(learned, ineq.argument, ineq.current == "true")
        elif ineq.current is None:
            learned.arguments.pop(ineq.argument, None)
        elif (value := argument_value(ineq)) is not None:
            learned.arguments[ineq.argument] = value
        elif ineq.argument in learned.arguments:  # a bare value: drop ours to learn the type
            learned.arguments.pop(ineq.argument)
            last = ""
        else:  # a type pika cannot send (a float, a table): the probe cannot go past it
            return _stopped(learned, refusal.text)
    return _stopped(learned, "too many probes")


def _probe(found: QueueFound) -> Callable[[BlockingChannel], Any]:
    name, durable, auto_delete = found.name, found.durable, found.auto_delete
    arguments = {**found.arguments, **PROBE_GUARD}
    return lambda ch: ch.queue_declare(
        name, durable=durable, auto_delete=auto_delete, arguments=arguments
    )


def _stopped(found: QueueFound, why: str) -> QueueFound:
    found.complete = False
    found.note = f"arguments read only in part; the broker said: {why}"
    return found


@dataclass(frozen=True)
class ExchangeFound:
    name: str
    exists: bool
    type: str | None = None  # None: not read
    note: str = ""


def exchange_found(channels: Channels, name: str, kind: str, *, learn: bool) -> ExchangeFound:
    """Whether exchange ``name`` exists and, with ``learn``, its type. Reading the type is an
    active declare of ``kind`` that CREATES the exchange if it vanished since the passive
    check (no guard exists for exchanges): only callers that would declare it anyway learn."""
    refusal = attempt(channels, lambda ch: ch.exchange_declare(name, passive=True))
    if refusal is not None:
        return ExchangeFound(name, exists=refusal.code != 404, note=_unless_404(refusal))
    if not learn:
        return ExchangeFound(name, True)
    refusal = attempt(channels, lambda ch: ch.exchange_declare(name, kind, durable=True))
    if refusal is None:
        return ExchangeFound(name, True, kind)
    ineq = parse_inequivalence(refusal.text) if refusal.code == 406 else None
    if ineq is not None and ineq.argument == "type" and ineq.current:
        return ExchangeFound(name, True, ineq.current)
    return ExchangeFound(name, True, note=refusal.text)


def _unless_404(refusal: Refusal) -> str:
    return "" if refusal.code == 404 else refusal.text
