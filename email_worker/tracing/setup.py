"""The OpenTelemetry SDK side of tracing, built only when tracing is on: a ``TracerProvider``
with the service's resource, a ``BatchSpanProcessor`` (spans leave in batches from the SDK's own
thread: no export on a message's thread) and the OTLP/HTTP exporter, and the ports on top.

The endpoint and the service name come from ``Settings``; the SDK reads its other standard
variables itself: the exporter's headers, timeout, compression and certificates, the sampler
(``OTEL_TRACES_SAMPLER``, parent-based by default, so a gateway's "not sampled" is honoured),
the batch processor's sizes and delays (``OTEL_BSP_*``) and ``OTEL_RESOURCE_ATTRIBUTES``.
``shutdown`` flushes what is buffered (the worker calls it after draining; the SDK also does at
interpreter exit). A collector that is down costs dropped spans and a log line, never a message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from email_worker import __version__
from email_worker.config import otel
from email_worker.tracing import Telemetry
from email_worker.tracing.callbacks import OtelCallbackTracing
from email_worker.tracing.spans import OtelSpans

log = logging.getLogger(__name__)

RELAY_ATTRIBUTE = "email_worker.relay"
_SCHEMES = {"none": "smtp", "starttls": "smtp+starttls", "tls": "smtps"}


@dataclass(frozen=True)
class TracingConfig:
    url: str  # where spans are POSTed (OTLP/HTTP, protobuf)
    service_name: str | None  # OTEL_SERVICE_NAME; None: OTEL_RESOURCE_ATTRIBUTES', else ours
    command: str  # run, callbacks, beat: a resource attribute, to tell the processes apart
    destination: str  # the queue a message span consumes from
    relay: str  # the send step's relay (CONTRACT 16: its URL without credentials); "": none


def relay_name(security: str, host: str, port: int) -> str:
    """``smtp://host:port`` (``smtp+starttls://``, ``smtps://`` by ``SMTP_SECURITY``): the
    relay's URL without credentials, as CONTRACT section 16 names relays. The hook for named
    relays: a mailer that knows which relay took a send can ``Spans.annotate`` the step."""
    where = f"[{host}]" if ":" in host else host
    return f"{_SCHEMES.get(str(security), 'smtp')}://{where}:{port}"


def resource(config: TracingConfig) -> Resource:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, the instance id) with our service name
    (``OTEL_SERVICE_NAME``, else a ``service.name`` in the resource attributes, else
    ``email-worker``), version and command."""
    ours: dict[str, str] = {SERVICE_VERSION: __version__, "email_worker.command": config.command}
    if config.service_name:
        ours[SERVICE_NAME] = config.service_name
    found = Resource.create(ours)
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: otel.SERVICE_NAME}))
    return found


def provider(config: TracingConfig, processor: SpanProcessor | None = None) -> TracerProvider:
    """A provider exporting through ``processor`` (default: batches to ``config.url``)."""
    built = TracerProvider(resource=resource(config))  # the sampler: OTEL_TRACES_SAMPLER
    built.add_span_processor(processor or BatchSpanProcessor(OTLPSpanExporter(endpoint=config.url)))
    return built


def start(config: TracingConfig, processor: SpanProcessor | None = None) -> Telemetry:
    """Tracing on: the ports over one provider, and its shutdown."""
    built = provider(config, processor)
    tracer = built.get_tracer("email_worker", __version__)
    spans = OtelSpans(
        tracer,
        destination=config.destination,
        step_attributes={"send": {RELAY_ATTRIBUTE: config.relay}} if config.relay else None,
    )
    service = str(built.resource.attributes.get(SERVICE_NAME))
    log.info("tracing on", extra={"otlp_endpoint": config.url, "service_name": service})

    def shutdown() -> None:
        try:
            built.shutdown()  # the batch processor exports what it holds, then stops
        except Exception as exc:  # a collector gone at exit must not fail the drain
            log.warning("flushing spans failed", extra={"error": type(exc).__name__})

    return Telemetry(
        spans=spans,
        callbacks=OtelCallbackTracing(tracer),
        exemplar=spans.exemplar,
        shutdown=shutdown,
    )
