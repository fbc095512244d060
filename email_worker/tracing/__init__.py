"""Tracing (CONTRACT section 18): OpenTelemetry spans for each message and its steps, carried
through retries, dead letters, replays and the outbox into the callback's POST.

The only package that imports OpenTelemetry, and only from its modules: this ``__init__`` imports
none, so a worker with tracing off (no ``OTEL_EXPORTER_OTLP_ENDPOINT``) never loads the SDK and
runs the null implementations (``ports.NoSpans``, ``callbacks.trace_context.PassThrough``).
``telemetry`` is what the composition root asks for; ``setup.start`` builds the SDK side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from email_worker.callbacks.trace_context import CallbackTracing, PassThrough
from email_worker.ports import NoSpans, Spans

if TYPE_CHECKING:
    from email_worker.config import Settings

# The trace of the current (or just finished) message span for a histogram exemplar.
Exemplar = Callable[[], dict[str, str] | None]


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Telemetry:
    """What a process traces with. The defaults are tracing off: null spans, callbacks that
    forward a recorded ``traceparent`` unchanged, no exemplars, nothing to flush."""

    spans: Spans = field(default_factory=NoSpans)
    callbacks: CallbackTracing = field(default_factory=PassThrough)
    exemplar: Exemplar | None = None
    shutdown: Callable[[], None] = _nothing  # flush what is buffered; called on drain


def telemetry(settings: Settings, command: str) -> Telemetry:
    """Tracing for ``command`` (``run``, ``callbacks``, ``beat``): off unless an OTLP endpoint
    is set (then the SDK is imported and an exporter built, which connects only when the
    first batch of spans is exported)."""
    url = settings.otlp_traces_url
    if url is None:
        return Telemetry()
    from email_worker.tracing.setup import TracingConfig, relay_name, start

    # The send step names the relay: the SMTP_* one, unless RELAYS (or the sandbox) chooses per
    # send, when the pipeline annotates the step with the relay that took it instead.
    one_relay = not (getattr(settings, "relays", None) or getattr(settings, "sandbox", False))
    relay = relay_name(settings.smtp_security, settings.smtp_host, settings.smtp_port)
    return start(
        TracingConfig(
            url=url,
            service_name=settings.otel_service_name,
            command=command,
            destination=settings.email_queue,
            relay=relay if one_relay else "",
        )
    )
