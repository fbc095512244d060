"""The cost of tracing per message: the handler and pipeline of one delivered message, over
in-memory ports, with tracing off (``NoSpans``, what ships by default) against the same code
before the tracing hooks existed (``handler.py`` and ``pipeline.py`` as of ``BEFORE_REF``,
loaded from git as temporary modules; the working tree is not touched), and, for information,
with tracing on (the OpenTelemetry SDK, a batch processor and an exporter that encodes each
batch as OTLP protobuf, as the real one does before its POST, then discards it).

The ports do no I/O and the renderer returns fixed content, so what is measured is the core's
own path per message: parse, claim, fetch, render, send, decide, record, the outcome line (its
logger has no handler here, as in the log-line part's absence). The ``before`` side also lacks
the other v2 hooks (pacing, suppression, scheduled sends) that landed with the spans' port, so
the difference is an upper bound on what the tracing hooks cost when tracing is off.
Equivalence: each side acks the message ``delivered`` and sends one email with the same
``Message-ID``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker import handler as handler_now
from email_worker import pipeline as pipeline_now
from email_worker.broker.retry_copies import keep
from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Ack, RetryPolicy
from email_worker.ports import (
    Claim,
    Delivery,
    MessageProperties,
    OutgoingEmail,
    Recipient,
    Record,
    RenderedEmail,
    Sent,
)
from email_worker.tracing.setup import TracingConfig, start
from schemas.request import EmailRequest
from templates_client.template import Template

PART = "tracing"
BEFORE_REF = "b44aa80"  # the last commit before the Spans port (and the other v2 hooks)
_REPO = Path(__file__).resolve().parents[2]
_TEMPLATE = Template("welcome", None, "Hello {{ name }}", "<p>Hi {{ name }}</p>", None, "v1")
_CONTENT = RenderedEmail("Hello Ada", "<p>Hi Ada</p>", "Hi Ada", "welcome", "v1")
_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_BODY = json.dumps(
    {
        "request_id": "req-3c1e9b2a-7f6d-4e58-a0b1-c2d3e4f50617",
        "template_code": "welcome",
        "to_email": "ada@example.com",
        "variables": {"name": "Ada", "link": "https://example.com/confirm"},
    }
).encode()


class _Ports:
    """Every port the pipeline needs, in memory and constant: the same work each call."""

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []

    def claim(self, request: EmailRequest) -> Claim:
        return Claim(request.request_id, "lease", 1)

    def finish(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        return 1

    def reject(self, *args: object) -> int | None:
        return None

    def resolve(self, request: EmailRequest) -> Recipient:
        return Recipient(request.recipient or "")

    def get(self, code: str, language: str | None) -> Template:
        return _TEMPLATE

    def render(self, template: Template, variables: dict[str, object]) -> RenderedEmail:
        return _CONTENT

    def send(self, email: OutgoingEmail) -> Sent:
        if len(self.sent) < 2:
            self.sent.append(email)
        return Sent("250 2.0.0 queued", "smtp://relay.example.com:25")

    def hand_over(self, outbox_id: int) -> None:
        return None


class _Encoding(SpanExporter):
    """Encodes each batch as the OTLP/HTTP exporter does, then drops it."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializePartialToString()
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _load(ref: str, name: str, source_of: dict[str, str]) -> ModuleType:
    """``email_worker/<name>.py`` as of ``ref`` under another module name; its imports of the
    other modules loaded here point at their ``ref`` versions too."""
    source = subprocess.run(
        ["git", "-C", str(_REPO), "show", f"{ref}:email_worker/{name}.py"],
        capture_output=True,
        check=True,
        timeout=30,
        text=True,
    ).stdout
    for other, replacement in source_of.items():
        source = source.replace(f"from email_worker.{other} import", f"from {replacement} import")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}_{ref}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"bench_{name}_{ref}", path)
        if spec is None or spec.loader is None:
            raise ImportError(name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return module


def load_before(ref: str = BEFORE_REF) -> tuple[ModuleType, ModuleType] | None:
    """``(pipeline, handler)`` as of ``ref``; None when git or the commit is not there."""
    try:
        pipeline = _load(ref, "pipeline", {})
        handler = _load(ref, "handler", {"pipeline": pipeline.__name__})
    except (OSError, subprocess.SubprocessError, ImportError):
        return None
    return pipeline, handler


class OneMessage:
    """One message through a handler built from ``modules`` (``pipeline``, ``handler``)."""

    def __init__(self, pipeline: ModuleType, handler: ModuleType, **spans: Any) -> None:
        self.ports = _Ports()
        config = pipeline.PipelineConfig(
            sender="noreply@example.com",
            message_id_secret=b"k" * 32,
            callback_url="http://gateway.example/api/v1/email/status/",
            callback_allowed_hosts=(),
            host_allowed=host_allowed,
        )
        p = self.ports
        built = pipeline.Pipeline(config, p, p, p, p, p, p, **spans)
        policy = RetryPolicy(max_attempts=5, delays=(5.0,), max_deferrals=5)
        self.handler = handler.Handler(built, policy, keep, max_message_bytes=262_144)
        properties = MessageProperties(headers={"traceparent": _TRACEPARENT})
        self.delivery = Delivery(_BODY, properties, 1, 1, False, 0, 0, None)

    def one(self) -> object:
        return self.handler.handle(self.delivery)


def _check(*paths: OneMessage) -> str:
    for path in paths:
        decision = path.one()
        assert isinstance(decision, Ack) and decision.outcome == "delivered", decision
    ids = {path.ports.sent[0].message_id for path in paths}
    assert len(ids) == 1, ids
    return "each side acks the message `delivered` and sends one email with the same Message-ID"


def run(rounds: int, scale: float = 1.0, ref: str = BEFORE_REF) -> list[Comparison]:
    """Tracing off against ``ref``, and tracing on against off; ``scale`` multiplies the 2,000
    messages per round. Nothing when ``ref`` cannot be loaded (said on stderr)."""
    before = load_before(ref)
    if before is None:
        print(f"tracing: {ref} is not reachable with git; skipped", file=sys.stderr)
        return []
    exporter = _Encoding()
    config = TracingConfig(
        "http://collector.invalid/v1/traces",
        None,
        "run",
        "email.queue",
        "smtp://relay.example.com:25",
    )
    processor = BatchSpanProcessor(exporter, max_queue_size=200_000, schedule_delay_millis=50)
    telemetry = start(config, processor)
    off = OneMessage(pipeline_now, handler_now)
    on = OneMessage(pipeline_now, handler_now, spans=telemetry.spans)
    then = OneMessage(*before)
    equivalent = _check(off, on, then)
    calls = max(1, int(2000 * scale))
    try:
        off_now, off_before = measure_pair(
            Side("tracing off (NoSpans), now", off.one),
            Side(f"before the tracing hooks ({ref})", then.one),
            calls=calls,
            rounds=rounds,
        )
        traced, untraced = measure_pair(
            Side("tracing on (SDK, batch export, OTLP encoding)", on.one),
            Side("tracing off (NoSpans), now", off.one),
            calls=calls,
            rounds=rounds,
        )
    finally:
        telemetry.shutdown()
    note = f"spans exported by the tracing-on side: {exporter.exported} (6 per message)"
    return [
        Comparison(PART, "one delivered message, tracing off", off_now, off_before, equivalent),
        Comparison(
            PART, "one delivered message, tracing on", traced, untraced, equivalent, (note,)
        ),
    ]
