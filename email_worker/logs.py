"""JSON logs (python-json-logger) with the request context on every line and no PII.

``request_context`` binds ``request_id`` / ``correlation_id`` for the current thread of work;
a filter stamps them on every record. As a second line of defence, the filter rewrites any
e-mail address to ``***@domain`` and any URL password to ``***`` in every field of the line:
the message, its exception text and stack, the ids (a ``correlation_id`` may itself be an
address) and every ``extra`` field, nested ones included (RELIABILITY rule 18). Local parts may
be internationalised (``ädä@exämple.com``): every non-ASCII character counts as one.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

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


def json_handler(stream: TextIO) -> logging.Handler:
    """A handler writing scrubbed JSON lines, one per record, to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(correlation_id)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(ContextFilter())
    return handler


def configure(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines. Idempotent."""
    root = logging.getLogger()
    root.handlers = [json_handler(sys.stdout)]
    root.setLevel(level.upper())
    for noisy in ("pika", "httpx", "httpcore", "celery", "kombu", "amqp", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
