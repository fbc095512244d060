"""Metrics: labels of decisions, publish age, the metered mailer, the scrape-time gauges."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from email_worker.broker.queue_stats import QueueStats
from email_worker.disposition import Ack, DeadLetter, Decision, Retry
from email_worker.ops.metrics import (
    Cached,
    LiveGauges,
    LiveSources,
    MeteredMailer,
    WorkerMetrics,
    count_callback,
    outcome_labels,
    publish_age,
)
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.smtp.pool import PoolCounts
from schemas.failures import Reason, TransientFailure
from tests.fakes import FakeMailer

EMAIL = OutgoingEmail(
    sender="n@example.com",
    recipient="to@example.com",
    message_id="<x@example.com>",
    content=RenderedEmail("s", "<p>h</p>", "h", "welcome", "1"),
)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("decision", "labels"),
    [
        (Ack("delivered"), ("delivered", "")),
        (Ack("duplicate"), ("duplicate", "")),
        (Retry(0.3, 0.3, Reason.SMTP_TRANSIENT, "451", 1, 0), ("retried", "smtp_transient")),
        (DeadLetter(Reason.OPTED_OUT, "", 1), ("dead_lettered", "opted_out")),
    ],
)
def test_outcome_labels(decision: Decision, labels: tuple[str, str]) -> None:
    assert outcome_labels(decision) == labels


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (None, None),
        (True, None),
        ("1000", None),
        (0, None),
        (990, 10.0),
        (1003, 0.0),  # a publisher clock slightly ahead: clamped
        (1010, None),  # too far ahead: skipped
    ],
)
def test_publish_age(timestamp: object, expected: float | None) -> None:
    assert publish_age(timestamp, 1000.0) == expected


def test_publish_age_understands_milliseconds() -> None:
    assert publish_age(1_700_000_000_000, 1_700_000_002.5) == pytest.approx(2.5)


def test_settled_counts_by_outcome_and_reason_and_end_to_end_only_for_delivered() -> None:
    metrics = WorkerMetrics()
    metrics.received()
    metrics.settled(Ack("delivered"))
    metrics.settled(DeadLetter(Reason.TEMPLATE_NOT_FOUND, "", 1))
    metrics.settled(DeadLetter(Reason.TEMPLATE_NOT_FOUND, "", 1))
    metrics.decided(Ack("duplicate"), 1)
    metrics.decided(Ack("delivered"), None)
    reg = metrics.registry
    assert value(reg, "email_worker_messages_consumed_total") == 1
    assert value(reg, "email_worker_outcomes_total", outcome="delivered", reason="") == 1
    dead = value(
        reg, "email_worker_outcomes_total", outcome="dead_lettered", reason="template_not_found"
    )
    assert dead == 2
    assert value(reg, "email_worker_end_to_end_seconds_count") == 0
    assert value(reg, "email_worker_build_info", version="0.1.0") == 1


def test_ledger_batch_sizes_are_a_histogram_per_statement() -> None:
    metrics = WorkerMetrics()
    for size in (1, 3, 3):
        metrics.ledger_batch("claim", size)
    metrics.ledger_batch("finish", 8)
    reg = metrics.registry
    assert value(reg, "email_worker_ledger_batch_size_count", statement="claim") == 3
    assert value(reg, "email_worker_ledger_batch_size_sum", statement="claim") == 7
    assert value(reg, "email_worker_ledger_batch_size_bucket", statement="claim", le="2.0") == 1
    assert value(reg, "email_worker_ledger_batch_size_sum", statement="finish") == 8


def test_two_workers_in_one_process_have_separate_registries() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.received()
    assert value(second.registry, "email_worker_messages_consumed_total") == 0


def test_metered_mailer_times_successes_and_failures_and_reraises() -> None:
    metrics = WorkerMetrics()
    failure = TransientFailure(Reason.SMTP_TRANSIENT, "451 at RCPT")
    mailer = MeteredMailer(FakeMailer(failure), metrics.send_duration)
    with pytest.raises(TransientFailure):
        mailer.send(EMAIL)
    assert mailer.send(EMAIL).reply.startswith("250")
    assert value(metrics.registry, "email_worker_send_duration_seconds_count") == 2
    le_300 = value(metrics.registry, "email_worker_send_duration_seconds_bucket", le="300.0")
    assert le_300 == 2


def test_callback_counter_ignores_outcomes_that_settle_nothing() -> None:
    from prometheus_client import REGISTRY

    def count(result: str) -> float:
        return REGISTRY.get_sample_value("email_worker_callbacks_total", {"result": result}) or 0

    before = count("delivered")
    count_callback("delivered")
    count_callback("blocked")
    assert count("delivered") == before + 1
    assert count("blocked") == 0


def test_cached_loads_once_per_ttl_and_swallows_failures() -> None:
    calls: list[int] = []

    def load() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("down")
        return len(calls)

    cached = Cached(load, ttl=3600)
    assert cached.get() == 1 and cached.get() == 1 and len(calls) == 1
    always = Cached(load, ttl=0)
    assert always.get() is None  # the second load raises: no value, no exception
    assert always.get() == 3


def test_live_gauges_read_their_sources_at_scrape_time() -> None:
    breaker, in_flight = ["closed"], [0]
    cause: list[str | None] = [None]
    pool = [PoolCounts(busy=0, idle=0, waiting=0)]
    registry = CollectorRegistry()
    registry.register(
        LiveGauges(
            LiveSources(
                breakers={"template_service": lambda: breaker[0]},
                in_flight=lambda: in_flight[0],
                paused=lambda: cause[0] is not None,
                pause_cause=lambda: cause[0],
                pending_callbacks=lambda: None,
                queues=lambda: {"q.email": QueueStats(4, 2), "q.failed": QueueStats(7, 0)},
                email_queue="q.email",
                smtp_pool=lambda: pool[0],
            )
        )
    )
    assert value(registry, "email_worker_breaker_state", dependency="template_service") == 0
    breaker[0], in_flight[0] = "open", 3
    assert value(registry, "email_worker_breaker_state", dependency="template_service") == 2
    assert value(registry, "email_worker_in_flight_messages") == 3
    assert value(registry, "email_worker_smtp_sends_waiting") == 0
    pool[0] = PoolCounts(busy=8, idle=0, waiting=5)
    assert value(registry, "email_worker_smtp_connections", state="busy") == 8
    assert value(registry, "email_worker_smtp_connections", state="idle") == 0
    assert value(registry, "email_worker_smtp_sends_waiting") == 5
    # Consuming: the bare name reads 0 (dashboards and alerts written before the cause label).
    assert value(registry, "email_worker_consumer_paused") == 0
    cause[0] = "unroutable"
    assert value(registry, "email_worker_consumer_paused", cause="unroutable") == 1
    assert value(registry, "email_worker_consumer_paused") is None  # one series while paused
    assert value(registry, "email_worker_queue_messages", queue="q.failed") == 7
    assert value(registry, "email_worker_queue_consumers", queue="q.email") == 2
    assert value(registry, "email_worker_queue_consumers", queue="q.failed") is None
    exposition = generate_latest(registry).decode()
    assert "email_worker_callbacks_pending" not in exposition  # unknown: left out, not 0
