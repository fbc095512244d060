"""Tracing (CONTRACT section 18) over the real handler, pipeline and settler with in-memory
fakes of the other ports, and the OpenTelemetry SDK's in-memory exporter: the shape of a trace
(a CONSUMER span per message, a child per step), the gateway's trace continued, a retry copy in
the same trace, no address, subject, body or variable in any attribute, hostile headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pika.spec import Basic

from email_worker.broker.delivery import delivery_from
from email_worker.broker.publisher import Publisher
from email_worker.broker.retry_copies import keep
from email_worker.broker.settle import Acks, Settler
from email_worker.broker.topology import Topology
from email_worker.callbacks.url_policy import host_allowed
from email_worker.disposition import Ack, DeadLetter, Decision, Retry, RetryPolicy
from email_worker.handler import Handler
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Delivery, MessageProperties
from email_worker.render.renderer import TemplateRenderer
from email_worker.tracing import Telemetry
from email_worker.tracing.setup import TracingConfig, relay_name, start
from schemas.failures import PermanentFailure, Reason, TransientFailure, WorkerFailure
from templates_client.template import Template
from tests.fakes import FakeLedger, FakeMailer, FakeNotifier, FakeRecipients, FakeTemplates

GATEWAY_TRACE = "0af7651916cd43dd8448eb211c80319c"
GATEWAY_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{GATEWAY_TRACE}-{GATEWAY_SPAN}-01"
# What must never appear in a span: the recipient, the variables, hence subject and bodies.
ADDRESS = "zed.secret-7@privacy.example.org"
VARIABLES = {"name": "Quintessa-Marker", "link": "https://private.example.org/token-XYZ"}
TEMPLATE = Template(
    "welcome", None, "Hello {{ name }}", "<p>Hi {{ name }}: {{ link }}</p>", None, "v1"
)
SECRETS = ("zed.secret-7", "Quintessa-Marker", "token-XYZ", "Hello", "<p>")
STEPS = ["claim", "template", "render", "send", "record"]


def message(request_id: str = "req-trace-1", **extra: Any) -> bytes:
    fields = {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": ADDRESS,
        "variables": VARIABLES,
    }
    return json.dumps(fields | extra).encode()


def delivery(raw: bytes, headers: dict[str, object] | None = None) -> Delivery:
    properties = MessageProperties(headers=headers or {}, correlation_id="corr-42")
    return Delivery(raw, properties, 1, 1, False, 0, 0, None)


class World:
    """The handler over fakes, with tracing on into an in-memory exporter."""

    def __init__(self, telemetry: Telemetry, *mailer_script: WorkerFailure) -> None:
        self.ledger = FakeLedger()
        self.mailer = FakeMailer(*mailer_script)
        pipeline = Pipeline(
            PipelineConfig(
                sender="noreply@example.com",
                message_id_secret=b"k" * 32,
                callback_url="http://gateway.test/api/v1/email/status/",
                callback_allowed_hosts=(),
                host_allowed=host_allowed,
                record_patience_seconds=0.1,
            ),
            self.ledger,
            FakeRecipients(),
            FakeTemplates({"welcome": TEMPLATE}),
            TemplateRenderer(),
            self.mailer,
            FakeNotifier(),
            spans=telemetry.spans,
        )
        policy = RetryPolicy(max_attempts=3, delays=(5.0,), max_deferrals=5)
        self.handler = Handler(pipeline, policy, keep, max_message_bytes=262_144)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    config = TracingConfig(
        url="http://collector.invalid:4318/v1/traces",
        service_name=None,
        command="run",
        destination="email.queue",
        relay=relay_name("starttls", "relay.example.com", 587),
    )
    built = start(config, SimpleSpanProcessor(exporter))
    yield built
    built.shutdown()


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def test_a_message_continues_the_gateways_trace_with_a_child_per_step(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    world = World(telemetry)
    headers: dict[str, object] = {"traceparent": TRACEPARENT, "tracestate": "gw=abc123"}

    assert world.handler.handle(delivery(message(), headers)) == Ack("delivered")

    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == sorted(["process email.queue", *STEPS])
    consumer = spans["process email.queue"]
    assert consumer.kind == SpanKind.CONSUMER
    assert hex_trace(consumer) == GATEWAY_TRACE and parent_of(consumer) == GATEWAY_SPAN
    assert consumer.context is not None and consumer.context.trace_state.get("gw") == "abc123"
    assert consumer.attributes is not None
    assert dict(consumer.attributes) == {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": "email.queue",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "email_worker.request_id": "req-trace-1",
        "email_worker.correlation_id": "corr-42",
        "email_worker.attempt": 1,
        "email_worker.outcome": "delivered",
    }
    for step in STEPS:
        assert hex_trace(spans[step]) == GATEWAY_TRACE
        assert parent_of(spans[step]) == hex_span(consumer), step
        assert spans[step].kind == SpanKind.INTERNAL
    relay = (spans["send"].attributes or {})["email_worker.relay"]
    assert isinstance(relay, str) and "://" in relay and "@" not in relay
    assert consumer.resource.attributes["service.name"] == "email-worker"


def test_the_send_step_names_the_relay_without_credentials(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with telemetry.spans.message({}, {}), telemetry.spans.step("send"):
        pass

    send = by_name(exporter.get_finished_spans())["send"]
    assert send.attributes == {"email_worker.relay": "smtp+starttls://relay.example.com:587"}
    assert relay_name("tls", "::1", 465) == "smtps://[::1]:465"
    assert relay_name("none", "mailpit", 1025) == "smtp://mailpit:1025"


def test_the_record_carries_the_message_spans_traceparent_for_the_callback(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    world = World(telemetry)

    world.handler.handle(delivery(message(), {"traceparent": TRACEPARENT}))

    consumer = by_name(exporter.get_finished_spans())["process email.queue"]
    (record,) = world.ledger.rows["req-trace-1"].records
    assert record.traceparent == f"00-{GATEWAY_TRACE}-{hex_span(consumer)}-01"


def test_without_a_traceparent_each_message_starts_its_own_trace(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    world = World(telemetry)

    world.handler.handle(delivery(message("req-a")))
    world.handler.handle(delivery(message("req-b")))

    consumers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert [parent_of(span) for span in consumers] == [None, None]
    assert len({hex_trace(span) for span in consumers}) == 2


class _Captured:
    """A publisher, topology and acks for the settler: the copies it would publish."""

    def __init__(self) -> None:
        self.copies: list[tuple[str, bytes, Any]] = []
        self.failed_queue = "failed.queue"

    def publish(self, exchange: str, queue: str, body: bytes, properties: Any) -> None:
        self.copies.append((queue, body, properties))

    def retry_queue_for(self, delay: float) -> str:
        return f"email.retry.{int(delay * 1000)}ms"

    def ack(self, delivery: Delivery) -> None: ...

    def nack(self, delivery: Delivery, *, requeue: bool) -> None: ...

    def pause(self, seconds: float, cause: str) -> None: ...


def settled_copy(original: Delivery, decision: Decision) -> Delivery:
    """The copy the settler publishes for ``decision``, as the consumer receives it back."""
    broker = _Captured()
    settler = Settler(
        cast(Publisher, broker), cast(Topology, broker), cast(Acks, broker), pause_seconds=1.0
    )
    settler.settle(original, decision)
    ((_, body, properties),) = broker.copies
    return delivery_from(Basic.Deliver(delivery_tag=2), properties, body, 1)


def test_a_retry_after_a_451_is_a_second_message_span_in_the_same_trace(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    world = World(telemetry, TransientFailure(Reason.SMTP_TRANSIENT, "451 4.3.0 try later"))
    first = delivery(message(), {"traceparent": TRACEPARENT, "tracestate": "gw=abc123"})

    decision = world.handler.handle(first)
    assert isinstance(decision, Retry)
    retry = settled_copy(first, decision)
    assert world.handler.handle(retry) == Ack("delivered")

    consumers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert [hex_trace(span) for span in consumers] == [GATEWAY_TRACE] * 2
    assert [parent_of(span) for span in consumers] == [GATEWAY_SPAN] * 2  # siblings
    assert [s.attributes and s.attributes["email_worker.attempt"] for s in consumers] == [1, 2]
    outcomes = [s.attributes and s.attributes["email_worker.outcome"] for s in consumers]
    assert outcomes == ["retried", "delivered"]
    failed_send = next(s for s in exporter.get_finished_spans() if s.name == "send")
    assert failed_send.status.status_code == StatusCode.ERROR
    assert failed_send.attributes and failed_send.attributes["error.type"] == "smtp_transient"


def test_a_dead_letter_keeps_the_trace_headers_for_a_replay(telemetry: Telemetry) -> None:
    world = World(telemetry, PermanentFailure(Reason.RECIPIENT_REJECTED, "550 5.1.1 no"))
    first = delivery(message(), {"traceparent": TRACEPARENT, "tracestate": "gw=abc123"})

    decision = world.handler.handle(first)

    assert isinstance(decision, DeadLetter)
    record = settled_copy(first, decision)
    assert record.properties.headers["traceparent"] == TRACEPARENT
    assert record.properties.headers["tracestate"] == "gw=abc123"


def all_text(span: ReadableSpan) -> list[str]:
    """Every text a span exports: its name, status, attributes, events' and links'."""
    found = [span.name, span.status.description or ""]
    found += [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        found += [event.name, *[str(v) for v in (event.attributes or {}).values()]]
    for link in span.links:
        found += [str(v) for v in (link.attributes or {}).values()]
    found += [str(v) for v in span.resource.attributes.values()]
    return found


@pytest.mark.parametrize(
    "script",
    [
        [],  # delivered
        [TransientFailure(Reason.SMTP_TRANSIENT, f"451 4.2.0 <{ADDRESS}> mailbox busy")],
        [PermanentFailure(Reason.RECIPIENT_REJECTED, f"550 5.1.1 <{ADDRESS}> unknown")],
        [RuntimeError(f"bug while sending to {ADDRESS}: Hello Quintessa-Marker")],
    ],
)
def test_no_span_holds_an_address_subject_body_or_variable(
    telemetry: Telemetry, exporter: InMemorySpanExporter, script: list[Any]
) -> None:
    world = World(telemetry, *script)

    world.handler.handle(delivery(message(), {"traceparent": TRACEPARENT}))

    spans = exporter.get_finished_spans()
    assert len(spans) >= 5
    texts = [text for span in spans for text in all_text(span)]
    for secret in SECRETS:
        assert not [text for text in texts if secret in text], secret


def test_an_id_that_is_an_address_is_scrubbed_in_the_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    World(telemetry).handler.handle(delivery(message(ADDRESS)))

    consumer = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER)
    assert (
        consumer.attributes
        and consumer.attributes["email_worker.request_id"] == "***@privacy.example.org"
    )


# The W3C grammar (version 00 exactly 55 characters; later versions may append "-..."), as
# the test's own reference: a header is continued exactly when it matches.
_W3C = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?")


def w3c_valid(value: str) -> bool:
    match = _W3C.fullmatch(value)
    if match is None:
        return False
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return False
    return not (version == "00" and rest)


_HEX = st.text("0123456789abcdef", min_size=1, max_size=34)
_PARENTS = st.one_of(
    st.builds(
        lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
        st.sampled_from(["00", "01", "ff", "0g", "0"]),
        st.one_of(st.just(GATEWAY_TRACE), st.just("0" * 32), _HEX),
        st.one_of(st.just(GATEWAY_SPAN), st.just("0" * 16), _HEX),
        st.sampled_from(["01", "00", "1", "zz"]),
    ),
    st.just(TRACEPARENT + "-extra"),
    st.just("01-" + TRACEPARENT[3:] + "-future"),
    st.just(TRACEPARENT + "\n"),
    st.just(TRACEPARENT.upper()),
    st.text(max_size=80),
)
_VALUES = st.one_of(
    _PARENTS,
    _PARENTS.map(lambda text: text.encode("utf-8")),
    st.binary(max_size=80),
    st.integers(),
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.text(min_size=600, max_size=700),
)


# The fixtures are stateless across examples (the exporter is cleared by each).
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=_VALUES,
    state=st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(), st.none()),
    name=st.sampled_from(["traceparent", "Traceparent", "TRACEPARENT", "trace-parent"]),
)
@example(value=TRACEPARENT, state="gw=abc123", name="traceparent")  # continued
@example(value=f"  {TRACEPARENT}\t".encode(), state=b"\xff", name="Traceparent")  # continued
@example(value="01-" + TRACEPARENT[3:] + "-future", state=None, name="TRACEPARENT")  # continued
@example(value=TRACEPARENT + "\n", state="gw=abc123", name="traceparent")  # not continued
def test_hostile_trace_headers_never_fail_and_only_a_valid_one_is_continued(
    telemetry: Telemetry, exporter: InMemorySpanExporter, value: object, state: object, name: str
) -> None:
    exporter.clear()
    headers = {name: value, "tracestate": state, "x-other": value}

    with telemetry.spans.message(headers, {"request_id": "r"}):
        pass

    spans = exporter.get_finished_spans()
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip(" \t") if isinstance(text, str) else text  # optional whitespace
    continued = name != "trace-parent" and isinstance(text, str) and w3c_valid(text)
    if continued and isinstance(text, str) and not int(text.split("-")[3][:2], 16) & 1:
        # The gateway sampled this trace out (flags without the sampled bit): continued, so
        # not recorded either (the SDK's parent-based sampler keeps the gateway's decision).
        assert len(spans) == 0
        return
    (span,) = spans
    assert (parent_of(span) is not None) == continued
    if continued:
        assert isinstance(text, str) and hex_trace(span) == text.split("-")[1]


def test_exemplars_point_at_the_send_and_at_the_last_message_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    assert telemetry.exemplar is not None
    assert telemetry.exemplar() is None  # no span yet
    with telemetry.spans.message({"traceparent": TRACEPARENT}, {}), telemetry.spans.step("send"):
        inside = telemetry.exemplar()
    after = telemetry.exemplar()

    spans = by_name(exporter.get_finished_spans())
    assert inside == {"trace_id": GATEWAY_TRACE, "span_id": hex_span(spans["send"])}
    assert after == {"trace_id": GATEWAY_TRACE, "span_id": hex_span(spans["process email.queue"])}
    assert telemetry.exemplar() is None  # taken once


def test_an_unsampled_trace_gives_no_exemplar_but_still_propagates(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    unsampled = TRACEPARENT[:-2] + "00"
    with telemetry.spans.message({"traceparent": unsampled}, {}):
        assert telemetry.exemplar is not None and telemetry.exemplar() is None
        traceparent = telemetry.spans.traceparent()

    assert traceparent is not None and traceparent.startswith(f"00-{GATEWAY_TRACE}-")
    assert traceparent.endswith("-00")
    assert exporter.get_finished_spans() == ()  # parent-based sampling: nothing recorded


def test_the_callback_span_is_a_client_child_of_the_message_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with telemetry.spans.message({"traceparent": TRACEPARENT}, {}):
        recorded = telemetry.spans.traceparent()

    with telemetry.callbacks.post(recorded, {"request_id": "r", "attempt": 1}) as call:
        sent = call.traceparent
        call.answered(503, "retry")
    with telemetry.callbacks.post(None, {"request_id": "r"}) as untraced:
        assert untraced.traceparent is None

    spans = by_name(exporter.get_finished_spans())
    callback = spans["POST status callback"]
    assert callback.kind == SpanKind.CLIENT
    assert parent_of(callback) == hex_span(spans["process email.queue"])
    assert sent == f"00-{GATEWAY_TRACE}-{hex_span(callback)}-01"
    assert callback.attributes is not None
    assert callback.attributes["http.response.status_code"] == 503
    assert callback.status.status_code == StatusCode.ERROR
    assert len(spans) == 2  # no span for a row that was not traced
