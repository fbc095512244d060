"""JSON logs with the request context on every line and no PII.

``request_context`` binds ``request_id`` / ``correlation_id`` for the current thread of work;
a filter stamps them on every record. As a second line of defence, the filter rewrites any
e-mail address to ``***@domain`` and any URL password to ``***`` in every field of the line:
the message, its exception text and stack, the ids (a ``correlation_id`` may itself be an
address) and every ``extra`` field, nested ones included (RELIABILITY rule 18). Local parts may
be internationalised (``ädä@exämple.com``): every non-ASCII character counts as one.

One line per message makes this a hot path (``JsonLines``, ``LineWriter``): the line is the
fields python-json-logger wrote before (``time``, ``level``, ``logger``, ``message``, the ids,
``exc_info``, ``stack_info``, then the ``extra`` fields, values encoded by its ``JsonEncoder``),
built without its generic field machinery, the time formatted once a second; and ``configure``
writes the lines of many threads together, at most ``LINGER_SECONDS`` later (a warning or
worse at once): a write per line, with ``PYTHONUNBUFFERED`` as in the container image, cost
the ``run`` process about 5% of its CPU. A ``kill -9`` of ``run`` or ``callbacks`` may lose
their last ``LINGER_SECONDS`` of INFO lines; a normal exit writes them (``logging.shutdown``
flushes). Other commands write each line at once.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from pythonjsonlogger.json import JsonEncoder

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

# A local part: RFC 5322 atext and dots, and any non-ASCII character (RFC 6531). It is matched
# only from the start of a run of such characters (the lookbehind) and never given back (``++``),
# so scrubbing is linear in the text (RELIABILITY rule 19): "[atext]+@" tried again from every
# position of a long run without "@" was quadratic. Whatever follows the "@" is kept: the
# domain is not personal data, and an address without a dot or with a Unicode one is caught too.
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~.\\-\u0080-\U0010ffff"
_LOCAL_PART = re.compile(f"(?<![{_ATEXT}])[{_ATEXT}]++@")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]++:)[^@/\s]++@")
# Attributes every LogRecord has: what is left on a record are the caller's ``extra`` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def scrub(text: str) -> str:
    """``text`` with the local part of every address and every URL password masked (``***``).
    Costs one ``in`` test for text without an "@" (nearly every field of nearly every line)."""
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(r"\1***@", _LOCAL_PART.sub("***@", text))


def scrub_value(value: object) -> object:
    """``value`` with ``scrub`` applied to every string in it (lists, tuples, dict keys and
    values, at any depth); other values unchanged."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_value(key): scrub_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(item) for item in value]
    return value


@contextmanager
def request_context(request_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Stamp ``request_id`` and ``correlation_id`` on every log line inside the block."""
    tokens = (_request_id.set(request_id), _correlation_id.set(correlation_id))
    try:
        yield
    finally:
        _request_id.reset(tokens[0])
        _correlation_id.reset(tokens[1])


class ContextFilter(logging.Filter):
    """Stamps the request context on a record and scrubs every field of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = vars(record)  # the ids may have come as ``extra`` fields
        fields["request_id"] = fields.get("request_id") or _request_id.get()
        fields["correlation_id"] = fields.get("correlation_id") or _correlation_id.get()
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key in fields.keys() - _STANDARD:  # request_id, correlation_id, every extra field
            fields[key] = scrub_value(fields[key])
        return True


DATEFMT = "%Y-%m-%dT%H:%M:%S%z"
# Record attributes that are not ``extra`` fields (nor our ids, which come first).
_NOT_EXTRA = _STANDARD | {"request_id", "correlation_id", "asctime", "taskName"}
_ENCODER = JsonEncoder()  # python-json-logger's: datetimes, exceptions, enums, bytes, ...
LINGER_SECONDS = 0.1


class JsonLines(logging.Formatter):
    """One JSON object per record (see the module docstring for its fields)."""

    def __init__(self) -> None:
        super().__init__(datefmt=DATEFMT)
        self._second: tuple[int, str] = (-1, "")  # (second, its text): one tuple, swapped whole

    def format(self, record: logging.LogRecord) -> str:
        fields = vars(record)
        line: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": fields.get("request_id"),
            "correlation_id": fields.get("correlation_id"),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        for key, value in fields.items():
            if key not in _NOT_EXTRA and not key.startswith("_"):
                line[key] = value
        return _ENCODER.encode(line)

    def _time(self, created: float) -> str:
        second, text = self._second
        if int(created) != second:  # two threads may both compute it: the same text
            second = int(created)
            text = time.strftime(DATEFMT, self.converter(second))
            self._second = (second, text)
        return text


class LineWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines to its stream. With ``linger`` > 0 an INFO or DEBUG line waits
    up to that long and is written with the others of that moment, in one write; a warning
    or worse is written at once, after the lines waiting before it. The line is formatted
    before the handler's lock is taken: threads wait for each other only to append."""

    def __init__(self, stream: TextIO, linger: float = 0.0) -> None:
        super().__init__(stream)
        self._linger = linger
        self._waiting: list[str] = []
        self._due = threading.Event()
        self._closed = False
        if linger > 0:
            threading.Thread(target=self._later, name="log-writer", daemon=True).start()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return True
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._waiting.append(line)
            now = self._linger <= 0 or record.levelno >= logging.WARNING
            if now:
                self._write()
            elif len(self._waiting) == 1:
                self._due.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        """Write what waits and stop the writer thread (the stream stays open)."""
        with self.lock:  # type: ignore[union-attr]
            self._write()
            self._closed = True
        self._due.set()
        super().close()

    def _write(self) -> None:
        lines, self._waiting = self._waiting, []
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except ValueError:  # the stream was closed under us (interpreter shutdown): lost
            pass
        except Exception:  # as logging.StreamHandler does: never raise into the caller
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))

    def _later(self) -> None:
        while not self._closed:
            self._due.wait()
            time.sleep(self._linger)
            self._due.clear()  # before the write: a line appended after it sets it again
            self.flush()


def json_handler(stream: TextIO, linger: float = 0.0) -> logging.Handler:
    """A handler writing scrubbed JSON lines, one per record, to ``stream``; with ``linger``,
    INFO lines are written together at most that many seconds later (``LineWriter``)."""
    handler = LineWriter(stream, linger)
    handler.setFormatter(JsonLines())
    handler.addFilter(ContextFilter())
    return handler


def configure(level: str = "INFO", *, gather: bool = False) -> None:
    """Route the root logger to stdout as JSON lines. Idempotent. With ``gather`` (the
    services, a line per message), INFO lines are written together at most
    ``LINGER_SECONDS`` later. Records carry no process, thread or caller details (the lines
    show none, and finding them costs a system call and a stack walk per line)."""
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None  # the module's own switch for "no caller lookup"
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, LineWriter):
            old.close()  # writes what waits, ends its thread
    root.handlers = [json_handler(sys.stdout, LINGER_SECONDS if gather else 0.0)]
    root.setLevel(level.upper())
    for noisy in ("pika", "httpx", "httpcore", "celery", "kombu", "amqp", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
