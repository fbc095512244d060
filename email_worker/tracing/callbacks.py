"""``CallbackTracing`` on OpenTelemetry: a CLIENT span around each callback POST, a child of
the message's span whose ``traceparent`` the outbox row kept, and that span's ``traceparent``
sent to the gateway. The POST may come hours after the message (a gateway that was down), from
another process: the parent is remote, the trace is the same.

A row without a ``traceparent`` (recorded while ``run`` did not trace, or before migration 009)
gets no span and no header: a trace of one lone callback span would explain nothing.
Attributes: the HTTP method and answer, the callback's status and the dispatcher's outcome,
the request id and the outbox row's id and attempt; never the URL (a message's own callback URL
may carry a token in its query) nor the body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from email_worker.callbacks.trace_context import CallbackCall
from email_worker.tracing.context import TRACEPARENT, parent_context, traceparent_of
from email_worker.tracing.spans import named

SPAN_NAME = "POST status callback"


class _Unsent:
    """No trace to continue: nothing is recorded, no header is sent."""

    traceparent: str | None = None

    def answered(self, status: int | None, outcome: str) -> None:
        return None


class _Call:
    def __init__(self, span: Span) -> None:
        self._span = span
        self.traceparent = traceparent_of(span.get_span_context())

    def answered(self, status: int | None, outcome: str) -> None:
        self._span.set_attribute("email_worker.outcome", outcome)
        if status is None:  # no answer: refused, reset, timed out
            self._span.set_attribute("error.type", "no_answer")
            self._span.set_status(Status(StatusCode.ERROR, "no_answer"))
            return
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:  # HTTP client spans: 4xx and 5xx are errors
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR, str(status)))


class OtelCallbackTracing:
    """The ``CallbackTracing`` port. Thread-safe."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def post(
        self, traceparent: str | None, attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[CallbackCall]:
        if not traceparent:
            return nullcontext(_Unsent())
        return self._span(traceparent, attributes)

    @contextmanager
    def _span(self, traceparent: str, attributes: Mapping[str, str | int]) -> Iterator[_Call]:
        with self._tracer.start_as_current_span(
            SPAN_NAME,
            context=parent_context({TRACEPARENT: traceparent}),
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", **named(attributes)},
            record_exception=False,  # an exception's text is never recorded
            set_status_on_exception=False,
        ) as span:
            yield _Call(span)
