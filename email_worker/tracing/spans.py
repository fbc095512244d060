"""The ``Spans`` port on OpenTelemetry: one CONSUMER span per message, continuing the gateway's
trace, with a child span per pipeline step (claim, template, render, send, record).

Attributes: the messaging conventions (``messaging.system`` ``rabbitmq``, the queue as
``messaging.destination.name``, ``messaging.operation.type`` ``process``), and what the core
passes (ids, the attempt, the outcome and reason code), under ``email_worker.`` unless already
namespaced. No address, subject, body or variable is ever given to a span (CONTRACT section 18),
and as a second line of defence every text attribute is scrubbed like a log field (an id may
itself be an address). Exceptions are never recorded: their text may quote a relay's reply
naming the recipient. A failed step gets status ERROR and ``error.type`` (the reason code, or
the exception's class); a message that is dead-lettered gets status ERROR on its span.

A retry copy carries the message's headers, so it opens a new message span in the same trace
(the gateway's span as parent again: each attempt is a sibling). ``exemplar`` gives the trace
of the current span, or of the last message span this thread finished, to the latency
histograms (``ops/metrics.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, Tracer

from email_worker.logs import scrub
from email_worker.tracing.context import parent_context, traceparent_of

Attributes = Mapping[str, str | int]
NAMESPACE = "email_worker."
DEAD_LETTERED = "dead_lettered"  # the handler's outcome word for a message that failed for good


def named(attributes: Attributes) -> dict[str, str | int]:
    """``attributes`` namespaced (``request_id`` -> ``email_worker.request_id``; dotted names
    are kept) with every text value scrubbed."""
    return {
        (key if "." in key else NAMESPACE + key): scrub(value) if isinstance(value, str) else value
        for key, value in attributes.items()
    }


def mark_failed(span: Span, exc: BaseException) -> None:
    """Status ERROR and ``error.type``: the failure's reason code, else the exception's class
    name. The exception's text is never recorded."""
    reason = getattr(exc, "reason", None)
    kind = str(reason) if reason is not None else type(exc).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


class OtelSpans:
    """The ``Spans`` port. Thread-safe: the current span lives in the thread's context."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        destination: str,
        step_attributes: Mapping[str, Attributes] | None = None,
    ) -> None:
        """``destination``: the queue consumed. ``step_attributes``: fixed attributes per step
        name, e.g. ``{"send": {"email_worker.relay": "smtp://relay:587"}}``."""
        self._tracer = tracer
        self._steps = {name: named(values) for name, values in (step_attributes or {}).items()}
        self._message_attributes: dict[str, str | int] = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": destination,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        }
        self._name = f"process {destination}"
        self._local = threading.local()

    @contextmanager
    def message(self, headers: Mapping[str, object], attributes: Attributes) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            self._name,
            context=parent_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={**self._message_attributes, **named(attributes)},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                mark_failed(span, exc)
                raise
            finally:
                self._local.last = span.get_span_context()

    @contextmanager
    def step(self, name: str, attributes: Attributes | None = None) -> Iterator[None]:
        values = named(attributes) if attributes else {}
        fixed = self._steps.get(name)
        if fixed:
            values = {**fixed, **values}
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind.INTERNAL,
            attributes=values,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                mark_failed(span, exc)
                raise

    def traceparent(self) -> str | None:
        return traceparent_of(trace.get_current_span().get_span_context())

    def annotate(self, attributes: Attributes) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attributes(named(attributes))
        if attributes.get("outcome") == DEAD_LETTERED:
            span.set_status(Status(StatusCode.ERROR, str(attributes.get("reason", ""))))

    def exemplar(self) -> dict[str, str] | None:
        """``{"trace_id", "span_id"}`` of the current span when it is sampled, else of the last
        message span this thread finished (taken once: a later call without a span gets
        None); None when neither is sampled."""
        context: SpanContext | None = trace.get_current_span().get_span_context()
        if context is not None and not context.is_valid:  # after the message span: its own
            context = self._local.__dict__.pop("last", None)
        if context is None or not (context.is_valid and context.trace_flags.sampled):
            return None
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
