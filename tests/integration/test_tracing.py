"""One trace per request (CONTRACT section 18), on the real services: ``email-worker run`` and
``email-worker callbacks`` as processes exporting to an OTLP/HTTP receiver of the test's own
(protobuf ``ExportTraceServiceRequest`` decoded with ``opentelemetry-proto``), a message
published with the gateway's ``traceparent``, a relay that answers 451 once, the gateway's
callback endpoint; a dead letter replayed by ``email-worker dlq replay``; the outbox rows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import Claim
from tests.fakes import email_request
from tests.integration.test_celery_path import consumers, gate_the_retry, statuses
from tests.integration.test_ledger import query, sent
from tests.support.http import FakeHttpServer, Reply, Seen
from tests.support.smtp import Behaviour
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration

GATEWAY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{GATEWAY_TRACE}-{GATEWAY_SPAN}-01"
PROTOBUF = "application/x-protobuf"
STEPS = {"claim", "template", "render", "send", "record"}


def value_of(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def attributes(pairs: Any) -> dict[str, object]:
    return {pair.key: value_of(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Exported:
    """One span as the receiver decoded it, with its process's resource attributes."""

    span: Span
    resource: dict[str, object]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, object]:
        return attributes(self.span.attributes)


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf) on a loopback port: what an
    OpenTelemetry Collector's ``otlp`` receiver accepts, and nothing else (another content type
    or a body that does not decode is answered 400, as the collector does)."""

    def __init__(self) -> None:
        self.server = FakeHttpServer().start()
        self.spans: list[Exported] = []
        self.refused = 0
        self._lock = threading.Lock()
        self.server.route("POST", "/v1/traces", self._export)

    @property
    def url(self) -> str:
        return self.server.url

    def _export(self, seen: Seen) -> Reply:
        content_type = {k.lower(): v for k, v in seen.headers.items()}.get("content-type")
        request = ExportTraceServiceRequest()
        try:
            if content_type != PROTOBUF:
                raise ValueError(content_type)
            request.ParseFromString(seen.body)
        except Exception:
            with self._lock:
                self.refused += 1
            return Reply(400, b"")
        found = [
            Exported(span, attributes(batch.resource.attributes))
            for batch in request.resource_spans
            for scope in batch.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.spans.extend(found)
        answer = ExportTraceServiceResponse().SerializeToString()
        return Reply(200, answer, {"Content-Type": PROTOBUF})

    def trace(self, trace_id: str) -> list[Exported]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    # Spans leave the processes in batches every 100 ms instead of every 5 s (the SDK's own
    # standard variable, inherited by the spawned processes).
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    built = OtlpReceiver()
    try:
        yield built
    finally:
        built.server.stop()


def message(request_id: str, address: str, template: str = "welcome") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": template,
        "to_email": address,
        "variables": {"name": "Ada", "link": "https://example.com/secret-link"},
    }


def kinds(spans: list[Exported], kind: int) -> list[Exported]:
    return [span for span in spans if span.span.kind == kind]


def test_a_request_is_one_trace_from_the_gateway_through_a_retry_to_the_callback(
    stack: Stack, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    request_id = f"trace-{uuid.uuid4().hex[:8]}"
    address = f"{request_id}@example.com"
    gate_the_retry(stack, request_id)  # the pending callback reaches the gateway first
    stack.smtp.script(address, Behaviour(rcpt="451 4.3.0 try again later"))
    overrides: dict[str, Any] = {
        "otel_exporter_otlp_endpoint": receiver.url,
        "template_cache_seconds": 0,
        "retry_delays": [0.3, 0.6],
    }
    queue = stack.settings().callback_queue
    with (
        stack.spawn("callbacks", log=tmp_path / "callbacks.log", **overrides),
        stack.spawn("run", log=tmp_path / "run.log", **overrides) as run,
    ):
        wait_for(lambda: consumers(stack, queue) == 1, 60, "the Celery worker to consume")
        stack.publish(
            message(request_id, address, "flaky"),
            headers={"traceparent": TRACEPARENT, "tracestate": "gateway=7f3a"},
        )
        wait_for(lambda: statuses(stack, request_id) == ["pending", "delivered"], 60, "both")
        wait_for(
            lambda: len(kinds(receiver.trace(GATEWAY_TRACE), Span.SPAN_KIND_CLIENT)) == 2,
            30,
            "the worker's and the callbacks' spans at the receiver",
        )
        wait_for(
            lambda: len(kinds(receiver.trace(GATEWAY_TRACE), Span.SPAN_KIND_CONSUMER)) == 2, 30
        )
        assert run.poll() is None
    assert stack.status(request_id) == "sent" and receiver.refused == 0

    trace = receiver.trace(GATEWAY_TRACE)
    messages = kinds(trace, Span.SPAN_KIND_CONSUMER)
    # Both attempts continue the gateway's span: the 451's retry is a second message span.
    assert [m.parent_id for m in messages] == [GATEWAY_SPAN, GATEWAY_SPAN]
    assert sorted(str(m.attributes["email_worker.outcome"]) for m in messages) == [
        "delivered",
        "retried",
    ]
    assert sorted(int(str(m.attributes["email_worker.attempt"])) for m in messages) == [1, 2]
    for m in messages:
        assert m.attributes["messaging.system"] == "rabbitmq"
        assert m.attributes["messaging.destination.name"] == stack.settings().email_queue
        assert m.resource["service.name"] == "email-worker"
        assert m.resource["email_worker.command"] == "run"
        children = [s for s in trace if s.parent_id == m.span_id]
        steps = {s.span.name for s in kinds(children, Span.SPAN_KIND_INTERNAL)}
        assert steps == STEPS, m.attributes
    # One CLIENT span per callback POST, each a child of its message's span, in `callbacks`.
    posts = kinds(trace, Span.SPAN_KIND_CLIENT)
    assert {p.parent_id for p in posts} == {m.span_id for m in messages}
    assert {p.resource["email_worker.command"] for p in posts} == {"callbacks"}
    # The gateway got the same trace, each POST naming its own span as the parent.
    sent_headers = [
        {k.lower(): v for k, v in seen.headers.items()}["traceparent"]
        for seen in stack.http.seen("POST", CALLBACK_PATH)
        if seen.json().get("notification_id") == request_id
    ]
    assert sorted(sent_headers) == sorted(f"00-{GATEWAY_TRACE}-{p.span_id}-01" for p in posts)
    # Nothing personal was exported.
    exported = [str(v) for s in trace for v in s.attributes.values()]
    assert not [v for v in exported if request_id + "@" in v or "secret-link" in v]


def test_a_replayed_dead_letter_stays_in_the_gateways_trace(
    stack: Stack, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    request_id = f"replay-{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"otel_exporter_otlp_endpoint": receiver.url}
    with stack.spawn("run", log=tmp_path / "run.log", **overrides):
        stack.publish(
            message(request_id, "replay@example.com", "missing"),  # 404: dead-lettered
            headers={"traceparent": TRACEPARENT},
        )
        record = stack.dead_letter(request_id, 30)
        assert record.properties.headers is not None
        assert record.properties.headers["traceparent"] == TRACEPARENT
        with stack.spawn("dlq", "replay", "--request-id", request_id) as replay:
            assert replay.wait(60) == 0
        wait_for(
            lambda: len(kinds(receiver.trace(GATEWAY_TRACE), Span.SPAN_KIND_CONSUMER)) == 2,
            30,
            "the replayed message's span",
        )

    messages = kinds(receiver.trace(GATEWAY_TRACE), Span.SPAN_KIND_CONSUMER)
    assert [m.parent_id for m in messages] == [GATEWAY_SPAN, GATEWAY_SPAN]
    assert [m.attributes["email_worker.reason"] for m in messages] == ["template_not_found"] * 2
    assert [m.span.status.code for m in messages] == [2, 2]  # STATUS_CODE_ERROR: dead-lettered


def outbox_traceparents(db: Database, *request_ids: str) -> list[object]:
    rows = query(
        db,
        "SELECT request_id, traceparent FROM callback_outbox WHERE request_id = ANY(%s)",
        list(request_ids),
    )
    found = dict(rows)
    return [found.get(request_id, "no row") for request_id in request_ids]


def must_claim(result: object) -> Claim:
    assert isinstance(result, Claim)
    return result


def test_the_outbox_row_keeps_the_traceparent_of_a_traced_outcome(db: Database) -> None:
    book = PgLedger(db, lease_seconds=30)
    traced, plain, later = (email_request(f"tp-{n}-{uuid.uuid4().hex[:6]}") for n in range(3))
    claims = [must_claim(c) for c in book.claim_many([traced, plain, later])]

    book.finish_many(
        [
            (claims[0], traced, replace(sent(), traceparent=TRACEPARENT)),
            (claims[1], plain, sent()),
        ]
    )
    book.finish(claims[2], later, sent())  # a later statement: the setting did not outlive it

    assert outbox_traceparents(db, traced.request_id, plain.request_id, later.request_id) == [
        TRACEPARENT,
        None,
        None,
    ]


def test_the_explicit_overload_enqueues_with_a_traceparent(db: Database) -> None:
    request_id = f"tp-overload-{uuid.uuid4().hex[:6]}"
    (row,) = query(
        db,
        "SELECT ew_enqueue_callback(%s, %s, %s, %s, 'failed', 'cancelled', %s, 30, %s)",
        f"msg_{uuid.uuid4().hex}",
        request_id,
        request_id,
        request_id,
        "http://gateway.example/status",
        TRACEPARENT,
    )

    assert row[0] is not None
    assert outbox_traceparents(db, request_id) == [TRACEPARENT]
