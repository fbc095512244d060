"""W3C trace context in and out: the gateway's ``traceparent``/``tracestate`` read from a
message's AMQP headers, and a span's ``traceparent`` written for the callback's POST.

Headers come from anyone who can publish, so nothing here may raise on what it finds: a value
may be ``str`` (pika decodes AMQP long strings), ``bytes`` (a byte array, or a long string that
is not UTF-8), a number, a table, or missing; the name may be cased differently. Only printable
ASCII of bounded length reaches the propagator (the W3C grammar is hex digits and dashes; a
newline would slip past its ``$``), and the propagator (OpenTelemetry's, the reference reading
of the W3C rules) keeps only a valid ``traceparent``. Anything else starts a new trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C: a traceparent of version 00 is 55 characters, later versions may append fields;
# tracestate holds at most 32 members and vendors propagate at least 512 characters of it.
MAX_LENGTH = {TRACEPARENT: 512, TRACESTATE: 4096}

_PROPAGATOR = TraceContextTextMapPropagator()


def carrier_of(headers: Mapping[str, object]) -> dict[str, str]:
    """The trace headers of ``headers`` fit for the propagator: names lower-cased, values as
    ASCII text with surrounding spaces and tabs removed; anything unusable left out."""
    carrier: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            continue
        key = name.lower()
        if key in MAX_LENGTH and key not in carrier:
            text = _text(value, MAX_LENGTH[key])
            if text is not None:
                carrier[key] = text
    return carrier


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, bytes | bytearray):
        if len(value) > limit:
            return None
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > limit:
        return None
    value = value.strip(" \t")
    printable = all(" " <= ch <= "~" for ch in value)
    return value if value and printable else None


def parent_context(headers: Mapping[str, object]) -> Context:
    """The context a message's span starts in: the remote parent of a valid ``traceparent``
    in ``headers`` (with its ``tracestate``), else an empty context (a new trace; never the
    thread's current span). Never raises."""
    try:
        carrier = carrier_of(headers)
        if TRACEPARENT not in carrier:
            return Context()
        return _PROPAGATOR.extract(carrier, context=Context())
    except Exception as exc:  # hostile input must never cost a message
        log.debug("trace context ignored", extra={"error": type(exc).__name__})
        return Context()


def traceparent_of(context: SpanContext) -> str | None:
    """The W3C ``traceparent`` (version 00) naming ``context``; None when it is invalid."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
