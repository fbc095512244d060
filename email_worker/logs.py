"""JSON logs (python-json-logger) with the request context on every line and no PII.

``request_context`` binds ``request_id`` / ``correlation_id`` for the current thread of work;
a filter stamps them on every record. As a second line of defence, the filter rewrites any
e-mail address to ``***@domain`` and any URL password to ``***`` in the message and its
exception text, so a careless log call cannot leak an address or a credential.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def scrub(text: str) -> str:
    """``text`` with addresses reduced to their domain and URL passwords masked."""
    return _URL_PASSWORD.sub(r"\1***@", _ADDRESS.sub(r"***@\1", text))


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
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or _request_id.get()
        record.correlation_id = getattr(record, "correlation_id", None) or _correlation_id.get()
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines. Idempotent."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(correlation_id)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("pika", "httpx", "httpcore", "celery", "kombu", "amqp", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
