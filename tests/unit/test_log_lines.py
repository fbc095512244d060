"""The outcome line's formatter and writer (``email_worker.logs``): ``JsonLines`` writes the
same JSON object python-json-logger's ``JsonFormatter`` wrote with the worker's former
settings, for plain lines, ``extra`` fields of any type, exceptions and stacks; ``LineWriter``
with a linger writes INFO lines together later, a warning at once after the lines waiting
before it, and everything on ``flush`` and ``close``."""

from __future__ import annotations

import enum
import io
import json
import logging
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pythonjsonlogger.json import JsonFormatter

from email_worker.logs import ContextFilter, JsonLines, LineWriter, request_context


class Colour(enum.Enum):
    RED = "red"


def library() -> JsonFormatter:
    """The formatter the worker used before ``JsonLines``."""
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(correlation_id)s",
        rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def record(level: int, message: str, *args: object, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("email_worker.outcome")
    made = logger.makeRecord(logger.name, level, __file__, 1, message, args, None, extra=extra)
    ContextFilter().filter(made)
    return made


def failing() -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    ContextFilter().filter(made)  # turns exc_info into (scrubbed) exc_text
    return made


CASES = {
    "outcome": lambda: record(
        logging.INFO,
        "message %s",
        "delivered",
        duration_ms=41.7,
        attempt=1,
        redelivered=False,
        recipient_domain="example.org",
        relay="smtp://relay.test:25",
    ),
    "odd values": lambda: record(
        logging.WARNING,
        "odd",
        when=datetime(2026, 12, 7, tzinfo=UTC),
        colour=Colour.RED,
        raw=b"\x00\x01",
        nested={"a": [1, (2, 3)], "b": None},
        number=Decimal("1.5"),
        _private="hidden",
    ),
    "exception": failing,
    "no context": lambda: record(logging.DEBUG, "plain"),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_the_line_is_the_one_python_json_logger_wrote(make: Any) -> None:
    with request_context("req-1", "corr-1"):
        ours = make()
    theirs = logging.makeLogRecord(vars(ours))  # the same fields, formatted by each
    assert json.loads(JsonLines().format(ours)) == json.loads(library().format(theirs))


def test_with_a_stack_the_line_is_the_one_python_json_logger_wrote() -> None:
    ours = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "s", (), None)
    ours.stack_info = "Stack (most recent call last):\n  a frame"
    theirs = logging.makeLogRecord(vars(ours))
    assert json.loads(JsonLines().format(ours)) == json.loads(library().format(theirs))


class Recording(io.StringIO):
    """A stream that counts its writes and says when one came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.wrote.set()
        return super().write(text)


def writer(linger: float) -> tuple[logging.Logger, LineWriter, Recording]:
    stream = Recording()
    handler = LineWriter(stream, linger)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger(f"tests.lines.{linger}.{time.monotonic_ns()}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, handler, stream


def messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_without_a_linger_each_line_is_written_at_once() -> None:
    logger, _, stream = writer(0.0)
    logger.info("one")
    logger.info("two")
    assert messages(stream) == ["one", "two"] and stream.writes == 2


def test_info_lines_wait_and_go_out_together_a_warning_at_once_after_them() -> None:
    logger, handler, stream = writer(60.0)  # far longer than the test: only a warning writes
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""
    logger.warning("three")
    assert messages(stream) == ["one", "two", "three"] and stream.writes == 1
    logger.info("four")
    handler.close()  # what waits is written
    assert messages(stream)[-1] == "four"


def test_a_lingering_line_is_written_by_the_writer_thread() -> None:
    logger, handler, stream = writer(0.01)
    logger.info("alone")
    assert stream.wrote.wait(10), "the writer thread never wrote the line"
    assert messages(stream) == ["alone"]
    handler.close()


def test_a_closed_stream_loses_the_lines_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    logger, handler, stream = writer(60.0)
    logger.info("lost")
    stream.close()
    handler.flush()
    assert capsys.readouterr().err == ""


def test_only_the_services_gather_their_lines() -> None:
    from email_worker import logs

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("INFO")
        command = root.handlers[0]
        logs.configure("INFO", gather=True)
        service = root.handlers[0]
        assert isinstance(command, LineWriter) and isinstance(service, LineWriter)
        assert command._linger == 0 and service._linger == logs.LINGER_SECONDS
        assert command._closed  # the one it replaced was closed (its lines written)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved
