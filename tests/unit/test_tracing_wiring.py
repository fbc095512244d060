"""Tracing around the data path: the ``OTEL_*`` settings, tracing off costing no SDK import, the
trace headers kept by every copy (retry copies kept in the ledger, re-driven and released ones,
replayed dead letters), the outcomes' traceparents for the outbox, and exemplars on
``/metrics`` when the scraper negotiates OpenMetrics."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from prometheus_client import CollectorRegistry, Histogram
from pydantic import ValidationError

from email_worker.broker.delivery import neutral_properties
from email_worker.broker.retry_copies import keep, rebuild
from email_worker.config import Settings
from email_worker.disposition import Hold, Retry
from email_worker.dlq.replay import replay_properties
from email_worker.ledger.statements import SET_TRACEPARENTS, finish_statement, traceparents
from email_worker.ops.health import HealthServer, Readiness
from email_worker.ops.metrics import MeteredMailer
from email_worker.ports import Claim, Delivery, LedgerStatus, Record
from email_worker.tracing import Telemetry, telemetry
from schemas.callback import CallbackStatus
from schemas.failures import Reason
from tests.fakes import FakeMailer, email_request

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTEL = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "url"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),  # empty is unset
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            "http://collector:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example/otlp/"},
            "https://c.example/otlp/v1/traces",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom",
            },
            "http://traces:9999/custom",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"EMAIL_WORKER_OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),  # no prefix
    ],
)
def test_tracing_is_on_only_with_a_standard_endpoint(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str | None
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert Settings().otlp_traces_url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_SDK_DISABLED", "perhaps"),
    ],
)
def test_a_bad_standard_variable_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert refused.value.errors()[0]["loc"] == (name,)


def test_the_service_name_and_protocol_are_read_without_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "mailer-eu")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

    settings = Settings()

    assert settings.otel_service_name == "mailer-eu"
    assert settings.otel_exporter_otlp_protocol == "http/protobuf"
    assert Settings(otel_service_name="by-name").otel_service_name == "by-name"


def test_tracing_off_builds_nothing_and_imports_no_sdk() -> None:
    probe = (
        "import sys\n"
        "from email_worker.app import build\n"
        "from email_worker.config import Settings\n"
        "from email_worker.tracing import telemetry\n"
        "from email_worker.ports import NoSpans\n"
        "from email_worker.callbacks.trace_context import PassThrough\n"
        "t = telemetry(Settings(), 'run')\n"
        "assert isinstance(t.spans, NoSpans) and isinstance(t.callbacks, PassThrough)\n"
        "assert t.exemplar is None\n"
        "t.shutdown()\n"
        "print(sorted(m for m in sys.modules if m.startswith(SDK)))\n"
    )
    # The tracing SDK and exporter, and our modules on them. (Other libraries may import the
    # OpenTelemetry API for their own instrumentation: redis-py 8 does.)
    sdk = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "email_worker.tracing.")
    probe = f"SDK = {sdk!r}\n" + probe
    env = {"PATH": "/usr/bin:/bin"}  # no OTEL_* variable
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "[]"


def test_tracing_on_builds_the_sdk_side() -> None:
    built = telemetry(Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:9/"), "callbacks")
    try:
        assert type(built.spans).__name__ == "OtelSpans"
        assert built.exemplar is not None and built.exemplar() is None
    finally:
        built.shutdown()  # nothing buffered: returns without exporting


def test_the_callbacks_process_flushes_its_spans_when_its_worker_shuts_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.signals import worker_shutdown

    from email_worker.app import build
    from email_worker.callbacks import tasks

    flushed: list[str] = []
    monkeypatch.setattr(
        build,
        "telemetry",
        lambda settings, command: Telemetry(shutdown=lambda: flushed.append(command)),
    )
    tasks.configure(Settings(), build.callback_runtime)  # built lazily: connects to nothing
    try:
        tasks.runtime()
        worker_shutdown.send(sender=None)  # what Celery sends as `email-worker callbacks` stops
        assert flushed == ["callbacks"]
        worker_shutdown.send(sender=None)  # closed once: nothing left to flush
        assert flushed == ["callbacks"]
    finally:
        tasks.configure(Settings(), build.callback_runtime)


# --- the trace headers travel with every copy -------------------------------------------------


def gateway_delivery(**headers: Any) -> Delivery:
    properties = pika.BasicProperties(content_type="application/json", headers=headers)
    return Delivery(b"{}", neutral_properties(properties), 1, 1, False, 0, 0, None)


@pytest.mark.parametrize(
    "decision",
    [
        Retry(
            queue_delay=5,
            delay=5,
            reason=Reason.SMTP_TRANSIENT,
            detail="451",
            attempts=1,
            deferrals=0,
        ),
        Hold(delay=3600, attempts=0, deferrals=0),  # a scheduled send, released later
    ],
)
@pytest.mark.parametrize(
    "as_sent", [lambda text: text, lambda text: text.encode("ascii")], ids=["str", "bytes"]
)
def test_copies_kept_in_the_ledger_keep_the_trace_headers(
    decision: Retry | Hold, as_sent: Any
) -> None:
    original = gateway_delivery(traceparent=as_sent(TRACEPARENT), tracestate=as_sent("gw=1"))

    kept = keep(original, decision)
    stored = json.loads(json.dumps(kept.properties))  # through the jsonb column
    rebuilt = rebuild(stored, None)  # what beat's re-drive and the release publish

    assert rebuilt.headers is not None
    assert rebuilt.headers["traceparent"] == TRACEPARENT
    assert rebuilt.headers["tracestate"] == "gw=1"


def test_a_trace_header_that_is_not_ascii_is_left_out_of_the_kept_copy() -> None:
    kept = keep(gateway_delivery(traceparent=b"\xff\xfe"), Hold(1, 0, 0))

    assert "traceparent" not in kept.properties["headers"]  # type: ignore[operator]


def test_a_replayed_dead_letter_keeps_the_trace_headers() -> None:
    record = pika.BasicProperties(
        headers={
            "traceparent": TRACEPARENT,
            "tracestate": "gw=1",
            "failure_reason": "template_not_found",
            "x-death": [{"count": 1}],
        }
    )

    replayed = replay_properties(record)

    assert replayed.headers == {"traceparent": TRACEPARENT, "tracestate": "gw=1"}


# --- the outbox's traceparents ----------------------------------------------------------------


def outcome(request_id: str, traceparent: str | None, callback: CallbackStatus | None) -> Any:
    claim = Claim(request_id, "lease", 1)
    record = Record(LedgerStatus.SENT, callback, traceparent=traceparent)
    return claim, email_request(request_id), record


def test_only_outcomes_with_a_callback_and_a_traceparent_reach_the_outbox_setting() -> None:
    batch = [
        outcome("a", TRACEPARENT, CallbackStatus.DELIVERED),
        outcome("b", None, CallbackStatus.DELIVERED),  # not traced
        outcome("c", TRACEPARENT, None),  # a deferral: no callback row
    ]

    found = traceparents(batch)

    assert found is not None and json.loads(found) == {"a": TRACEPARENT}
    assert traceparents(batch[1:]) is None
    assert finish_statement(True).startswith(SET_TRACEPARENTS)
    assert SET_TRACEPARENTS not in finish_statement(False)


# --- exemplars ------------------------------------------------------------------------------


def scrape(request: urllib.request.Request) -> tuple[str, str]:
    with urllib.request.urlopen(request, timeout=5) as answer:
        return str(answer.headers["Content-Type"]), answer.read().decode()


def test_metrics_negotiate_openmetrics_and_carry_the_send_trace_as_exemplar() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("bench_send_seconds", "send", registry=registry)
    trace = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
    mailer = MeteredMailer(FakeMailer(), histogram, lambda: trace)
    mailer.send(None)  # type: ignore[arg-type]  # the fake never reads it
    server = HealthServer(
        "127.0.0.1", 0, lambda: Readiness({}), registries=(registry, CollectorRegistry())
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    accept = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
    try:
        plain_type, plain_text = scrape(urllib.request.Request(url))
        open_type, open_text = scrape(urllib.request.Request(url, headers=accept))
    finally:
        server.stop()

    assert plain_type.startswith("text/plain")
    assert "trace_id" not in plain_text
    assert open_type.startswith("application/openmetrics-text")
    assert '# {span_id="b7ad6b7169203331",trace_id="0af7651916cd43dd8448eb211c80319c"}' in open_text
    assert open_text.count("# EOF") == 1 and open_text.endswith("# EOF\n")


def test_without_tracing_the_histograms_get_no_exemplar() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("bench_send_seconds", "send", registry=registry)
    MeteredMailer(FakeMailer(), histogram, Telemetry().exemplar).send(None)  # type: ignore[arg-type]

    samples = [s for metric in registry.collect() for s in metric.samples]
    assert samples and all(sample.exemplar is None for sample in samples)


# --- deploy/ ----------------------------------------------------------------------------------


def test_the_collector_example_receives_what_compose_points_the_worker_at() -> None:
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "deploy" / "otel-collector" / "config.yaml").read_text())
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]

    collector = services["otel-collector"]
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert (root / source).resolve() == root / "deploy" / "otel-collector" / "config.yaml"
    assert collector["command"] == [f"--config={target}"]
    assert collector["healthcheck"]["test"][-1] == f"--config={target}"
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    endpoint = services["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == f"http://otel-collector:{http.rsplit(':', 1)[1]}"
    assert services["callbacks"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["processors"][0] == "memory_limiter"
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert "otel-collector" not in services["worker"]["depends_on"]  # tracing never blocks
