"""Metrics and readiness of a worker on real services, after real traffic."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import Reply
from tests.support.smtp import Behaviour
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rid() -> str:
    return f"obs-{uuid.uuid4().hex[:12]}"


def message(request_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "request_id": request_id,
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.com"},
    }
    return body | extra


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def callbacks_delivered(port: int) -> float:
    return metric(scrape(port), "email_worker_callbacks_total", result="delivered") or 0.0


def test_metrics_count_real_traffic(stack: Stack) -> None:
    port = free_port()
    worker = stack.start_worker(http_port=port, metrics_cache_seconds=0)
    callbacks_before = callbacks_delivered(port)  # process-wide counter: compare deltas
    sent, flaky, missing, dup = rid(), rid(), rid(), rid()
    stack.smtp.script("flaky@example.com", Behaviour(rcpt="451 4.3.0 try later"))
    now = int(time.time())
    stack.publish(message(sent, to_email="a@example.com"), timestamp=now)
    stack.publish(message(flaky, to_email="flaky@example.com"), timestamp=now)
    stack.publish(message(missing, template_code="missing", to_email="m@example.com"))
    stack.publish(message(dup, to_email="dup@example.com"))
    stack.publish(b'{"request_id": "broken", ')
    wait_for(lambda: all(stack.status(r) == "sent" for r in (sent, flaky, dup)), 20, "sends")
    stack.publish(message(dup, to_email="dup@example.com"))  # the duplicate
    wait_for(lambda: len(stack.dead_letters()) == 2, 20, "two dead letters")
    wait_for(stack.idle, 20, "the queues to drain")
    wait_for(
        lambda: not stack.query("SELECT 1 FROM callback_outbox WHERE state = 'pending'"),
        20,
        "callbacks to settle",
    )

    samples = scrape(port)
    outcomes = "email_worker_outcomes_total"
    assert metric(samples, "email_worker_messages_consumed_total") == 7  # flaky twice
    assert metric(samples, outcomes, outcome="delivered", reason="") == 3
    assert metric(samples, outcomes, outcome="duplicate", reason="") == 1
    assert metric(samples, outcomes, outcome="retried", reason="smtp_transient") == 1
    assert metric(samples, outcomes, outcome="dead_lettered", reason="template_not_found") == 1
    assert metric(samples, outcomes, outcome="dead_lettered", reason="invalid_json") == 1
    assert metric(samples, "email_worker_send_duration_seconds_count") == 4  # 451 included
    assert metric(samples, "email_worker_end_to_end_seconds_count") == 2  # timestamped ones
    assert 0 <= (metric(samples, "email_worker_end_to_end_seconds_sum") or -1) < 60
    assert metric(samples, "email_worker_callbacks_pending") == 0
    assert metric(samples, "email_worker_in_flight_messages") == 0
    assert metric(samples, "email_worker_consumer_paused") == 0
    assert metric(samples, "email_worker_smtp_connections", state="busy") == 0
    assert 1 <= (metric(samples, "email_worker_smtp_connections", state="idle") or 0) <= 4
    assert metric(samples, "email_worker_smtp_sends_waiting") == 0
    settings = worker.settings
    assert metric(samples, "email_worker_queue_messages", queue=settings.failed_queue) == 2
    assert metric(samples, "email_worker_queue_messages", queue=settings.email_queue) == 0
    assert metric(samples, "email_worker_queue_consumers", queue=settings.email_queue) == 1
    posts = len(stack.http.seen("POST", CALLBACK_PATH))
    assert posts >= 4
    wait_for(lambda: callbacks_delivered(port) - callbacks_before == posts, 10, "callback count")
    for (name, labels), _ in samples.items():  # no id or address in any label
        assert name.startswith(("email_worker_", "python_", "process_")), name
        assert not any("@" in v or sent in v or "broken" in v for _, v in labels)


def test_breaker_gauge_opens_without_making_the_worker_unready(stack: Stack) -> None:
    stack.http.route("GET", "/api/v1/templates/down", Reply(503, "unavailable"))
    port = free_port()
    stack.start_worker(
        http_port=port, concurrency=1, prefetch=1, breaker_reset_seconds=60, breaker_fail_max=2
    )
    gauge = "email_worker_breaker_state"
    assert metric(scrape(port), gauge, dependency="template_service") == 0
    for n in range(3):
        stack.publish(message(rid(), template_code="down", to_email=f"d{n}@example.com"))

    def opened() -> bool:
        return metric(scrape(port), gauge, dependency="template_service") == 2

    wait_for(opened, 20, "the breaker gauge to read open")
    samples = scrape(port)
    assert metric(samples, gauge, dependency="user_service") == 0
    deferred = "template_service_unavailable"
    assert (
        metric(samples, "email_worker_outcomes_total", outcome="retried", reason=deferred) or 0
    ) >= 1
    code, body = ready(port)
    assert code == 200 and body["breakers"]["template_service"] == "open"


def test_readiness_follows_the_smtp_relay(stack: Stack) -> None:
    port = free_port()
    stack.start_worker(http_port=port, smtp_probe_interval_seconds=0.2)
    wait_for(lambda: ready(port)[0] == 200, 10, "ready")
    checks = {"broker": True, "database": True, "relays": True, "consumption": True}
    assert ready(port)[1]["checks"] == checks
    relay = f"smtp://127.0.0.1:{stack.smtp.port}"
    assert ready(port)[1]["relays"] == {relay: {"reachable": True, "breaker": "closed"}}
    stack.smtp.stop()
    try:
        wait_for(lambda: ready(port)[0] == 503, 10, "not ready without SMTP")
        code, body = ready(port)
        assert code == 503 and body["status"] == "not_ready"
        assert body["checks"]["relays"] is False
        assert body["relays"][relay]["reachable"] is False
        assert body["checks"]["broker"] and body["checks"]["database"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}  # liveness is unaffected
    finally:
        stack.smtp.start()
    wait_for(lambda: ready(port)[0] == 200, 10, "ready again")
