"""Prometheus metrics (prefix ``email_worker_``): what is counted, how, and where it is read.

Events are counted off the hot path: ``WorkerMetrics.settled`` sees every decision once the
broker has it, ``MeteredMailer`` times each SMTP attempt around the ``Mailer`` port, and
``LiveGauges`` reads breaker states, in-flight work, the pause flag, the outbox backlog and the
queue depths only when Prometheus scrapes. Each worker owns a ``CollectorRegistry`` (several
workers can live in one process, as in tests); the callback counter is process-wide on the
default registry because the dispatcher is. Labels carry closed sets only (outcomes, reason
codes, dependency and queue names): never an id or an address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from email_worker import __version__
from email_worker.broker.queue_stats import QueueStats
from email_worker.disposition import Ack, Decision, Hold, Retry
from email_worker.ports import Mailer, OutgoingEmail, Sent
from email_worker.relays.failover import RESULTS as SEND_RESULTS
from email_worker.smtp.pool import PoolCounts

log = logging.getLogger(__name__)

# From a fast local relay (5 ms) to a relay that answers after minutes (and retry delays).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
BREAKER_VALUES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
CALLBACK_RESULTS = frozenset({"delivered", "retry", "rejected", "dead", "superseded"})
SCRAPE_CACHE_SECONDS = 5.0
MAX_CLOCK_SKEW = 5.0  # seconds a publisher's clock may run ahead before we skip the sample

_CALLBACKS = Counter(
    "email_worker_callbacks_total",
    "Status callbacks settled by this process's dispatcher, by result.",
    ["result"],
)
# Every result exported from the start at 0, so increase() sees the first rejection too.
for _result in sorted(CALLBACK_RESULTS):
    _CALLBACKS.labels(result=_result)


def count_callback(result: str) -> None:
    """Count one dispatcher outcome; outcomes that settle nothing (blocked, not_due, skipped,
    missing, expired) are ignored. Never raises."""
    if result in CALLBACK_RESULTS:
        _CALLBACKS.labels(result=result).inc()


# Process-wide like the callback counter: beat's task runs in the callbacks worker.
_REDRIVEN = Counter(
    "email_worker_retries_redriven_total",
    "Scheduled retries re-published from the ledger because their copy was overdue (lost).",
)


def count_redriven(count: int) -> None:
    """Count ``count`` retries re-driven from the ledger (``maintenance.redrive_retries``)."""
    if count > 0:
        _REDRIVEN.inc(count)


_RELEASED = Counter(
    "email_worker_schedules_released_total",
    "Scheduled sends whose send_at came: their copy published from the ledger to the queue.",
)


def count_released(count: int) -> None:
    """Count ``count`` held requests released (``broker.release.Releaser``)."""
    if count > 0:
        _RELEASED.inc(count)


# Bounce and complaint intake (CONTRACT 15), process-wide: the webhook route serves them.
REPORT_PROVIDERS = ("ses", "sendgrid", "mailgun", "postmark", "dsn", "sandbox")
REPORT_KINDS = ("hard_bounce", "soft_bounce", "complaint", "unsubscribe")
_REPORTS = Counter(
    "email_worker_reports_total",
    "Bounce and complaint reports taken from providers, by provider and kind (soft bounces "
    "are only counted).",
    ["provider", "kind"],
)
_WEBHOOKS = Counter(
    "email_worker_webhooks_total",
    "Webhook POSTs answered, by provider and result (accepted, malformed, unauthenticated, "
    "bad_signature, stale, replayed, deferred, error).",
    ["provider", "result"],
)


def count_report(provider: str, kind: str) -> None:
    """Count one report; labels outside the closed sets are not exported. Never raises."""
    if provider in REPORT_PROVIDERS and kind in REPORT_KINDS:
        _REPORTS.labels(provider=provider, kind=kind).inc()


def count_webhook(provider: str, result: str) -> None:
    """Count one webhook answer (``provider`` is one of ours: the route knows no other)."""
    if provider in REPORT_PROVIDERS:
        _WEBHOOKS.labels(provider=provider, result=result).inc()


def publish_age(timestamp: object, now: float) -> float | None:
    """Seconds since the AMQP ``timestamp`` property, or None when it is absent, unusable or
    too far in the future. Gateways that put milliseconds there (JavaScript) are recognised."""
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or timestamp <= 0:
        return None
    seconds = timestamp / 1000 if timestamp > 1e11 else float(timestamp)
    age = now - seconds
    return None if age < -MAX_CLOCK_SKEW else max(0.0, age)


def outcome_labels(decision: Decision) -> tuple[str, str]:
    """``(outcome, reason)`` of a decision, as ``email_worker_outcomes_total`` labels it."""
    if isinstance(decision, Ack):
        return decision.outcome, ""
    if isinstance(decision, Hold):
        return "scheduled", ""
    if isinstance(decision, Retry):
        return "retried", str(decision.reason)
    return "dead_lettered", str(decision.reason)


# The trace of the current (or just finished) message, as exemplar labels for the latency
# histograms (``trace_id``, ``span_id``); None when not traced (email_worker/tracing).
Exemplar = Callable[[], dict[str, str] | None]


class WorkerMetrics:
    """The counters and histograms of one worker, in their own registry. With ``exemplar``
    (tracing on), each latency observation points at its trace (OpenMetrics exemplars)."""

    def __init__(self, exemplar: Exemplar | None = None) -> None:
        self.exemplar = exemplar
        self.registry = CollectorRegistry(auto_describe=True)
        self.consumed = Counter(
            "email_worker_messages_consumed",
            "Messages received from the email queue (redeliveries and retries included).",
            registry=self.registry,
        )
        self.outcomes = Counter(
            "email_worker_outcomes",
            "Messages settled, by outcome and reason code (empty when none).",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.send_duration = Histogram(
            "email_worker_send_duration_seconds",
            "Duration of one SMTP send attempt, whatever its result.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.end_to_end = Histogram(
            "email_worker_end_to_end_seconds",
            "From the gateway's publish (AMQP timestamp) to the relay's acceptance.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.ledger_batch_size = Histogram(
            "email_worker_ledger_batch_size",
            "Requests per ledger statement (group commit), by statement: claim or finish.",
            ["statement"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.lane_moves = Counter(
            "email_worker_lane_moves",
            "Low-priority messages moved to the bulk lane (docs/priority.md), by result: moved, "
            "or failed (the original was kept and processed in place).",
            ["result"],
            registry=self.registry,
        )
        for result in ("moved", "failed"):
            self.lane_moves.labels(result=result)
        self.sends = Counter(
            "email_worker_sends",
            "Sends through each relay, by result (docs/relays.md): sent, unavailable (handed to"
            " the next relay), unknown, rejected, throttled, transient, deferred.",
            ["relay", "result"],
            registry=self.registry,
        )
        # Rate limits and throttling (CONTRACT section 12, docs/rate-limits.md).
        self.throttles = Counter(
            "email_worker_throttled",
            "Throttling answers from the relay (421, 4.7.x, 454, 429), by route: relay, "
            "relay:<name> or domain:<domain> (50 throttled domains at most, then domain:other).",
            ["route"],
            registry=self.registry,
        )
        self.throttles.labels(route="relay")
        self.rate_limited = Counter(
            "email_worker_rate_limited_seconds",
            "Seconds sends waited for a rate limit's slot (RATE_LIMIT, DOMAIN_RATE_LIMITS, a "
            "throttled route), summed over the threads.",
            registry=self.registry,
        )
        Info("email_worker_build", "Version of the worker.", registry=self.registry).info(
            {"version": __version__}
        )

    def received(self) -> None:
        self.consumed.inc()

    def decided(self, decision: Decision, timestamp: object) -> None:
        """Observe the end-to-end latency of a delivered message (right after the relay's
        acceptance was recorded)."""
        if isinstance(decision, Ack) and decision.outcome == "delivered":
            age = publish_age(timestamp, time.time())
            if age is not None:
                self.end_to_end.observe(age, self.exemplar() if self.exemplar else None)

    def lane_moved(self, result: str) -> None:
        self.lane_moves.labels(result=result).inc()

    def relays(self, names: Iterable[str]) -> None:
        """Export every relay's sends at 0 from the start, so increase() sees the first."""
        for name in names:
            for result in SEND_RESULTS:
                self.sends.labels(relay=name, result=result)

    def sent_through(self, relay: str, result: str) -> None:
        """One send through ``relay`` (the router's observer)."""
        self.sends.labels(relay=relay, result=result).inc()

    def throttled(self, label: str) -> None:
        """A throttling answer on a route (the pacer's events; ``label`` is bounded)."""
        self.throttles.labels(route=label).inc()

    def waited(self, seconds: float) -> None:
        """A send waited ``seconds`` for its rate limits' slots."""
        self.rate_limited.inc(seconds)

    def watch_routes(self, rates: Callable[[], Mapping[str, float]]) -> None:
        """Export ``email_worker_route_rate`` from ``rates`` (the pacer's) at scrape time."""
        self.registry.register(_RouteRates(rates))

    def ledger_batch(self, statement: str, size: int) -> None:
        self.ledger_batch_size.labels(statement=statement).observe(size)

    def settled(self, decision: Decision) -> None:
        """Count a decision the broker has acted on (a requeued message is counted later)."""
        outcome, reason = outcome_labels(decision)
        self.outcomes.labels(outcome=outcome, reason=reason).inc()


class MeteredMailer:
    """The ``Mailer`` port, timed: every attempt lands in ``send_duration_seconds`` (with
    ``exemplar``, pointing at the send's trace)."""

    def __init__(
        self, inner: Mailer, histogram: Histogram, exemplar: Exemplar | None = None
    ) -> None:
        self._inner = inner
        self._histogram = histogram
        self._exemplar = exemplar

    def send(self, email: OutgoingEmail) -> Sent:
        """Exactly what the inner mailer returns or raises."""
        started = time.perf_counter()
        try:
            return self._inner.send(email)
        finally:
            elapsed = time.perf_counter() - started
            self._histogram.observe(elapsed, self._exemplar() if self._exemplar else None)


class _RouteRates(Collector):
    """``email_worker_route_rate{route}``: the rate in force of each limited or throttled
    route, in emails per second, read from the pacer when scraped."""

    def __init__(self, rates: Callable[[], Mapping[str, float]]) -> None:
        self._rates = rates

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "email_worker_route_rate",
            "Rate in force per route (emails per second): the configured limit, or less while "
            "a throttled route recovers; absent while a route is unlimited.",
            labels=["route"],
        )
        for route, rate in sorted(self._rates().items()):
            gauge.add_metric([route], rate)
        yield gauge


T = TypeVar("T")


class Cached(Generic[T]):
    """``get()`` calls ``load`` at most once per ``ttl`` seconds; concurrent scrapes share one
    load. A load that raises leaves the previous value in place (None at first)."""

    def __init__(self, load: Callable[[], T], ttl: float = SCRAPE_CACHE_SECONDS) -> None:
        self._load, self._ttl = load, ttl
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = float("-inf")

    def get(self) -> T | None:
        with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                self._at = time.monotonic()
                try:
                    self._value = self._load()
                except Exception as exc:  # a scrape must never fail because a source did
                    log.debug("metric source failed", extra={"error": type(exc).__name__})
                    self._value = None
            return self._value


@dataclass(frozen=True)
class LiveSources:
    """What ``LiveGauges`` reads at scrape time; every callable must be cheap or cached."""

    breakers: Mapping[str, Callable[[], str]]
    in_flight: Callable[[], int]
    paused: Callable[[], bool]
    pending_callbacks: Callable[[], int | None]
    queues: Callable[[], Mapping[str, QueueStats] | None]
    email_queue: str
    smtp_pool: Callable[[], PoolCounts]
    pause_cause: Callable[[], str | None] = lambda: None  # the cause code while paused
    backlog: Callable[[], tuple[int, int]] = lambda: (0, 0)  # waiting: (high, low) priority


class LiveGauges(Collector):
    """Gauges computed when scraped, so nothing on the data path pays for them."""

    def __init__(self, sources: LiveSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        src = self._sources
        breaker = GaugeMetricFamily(
            "email_worker_breaker_state",
            "Circuit breaker per dependency: 0 closed, 1 half-open, 2 open.",
            labels=["dependency"],
        )
        for dependency, state in src.breakers.items():
            breaker.add_metric([dependency], BREAKER_VALUES.get(state(), 2.0))
        yield breaker
        yield GaugeMetricFamily(
            "email_worker_in_flight_messages", "Messages being processed now.", src.in_flight()
        )
        yield _paused_gauge(src.paused(), src.pause_cause())
        backlog = GaugeMetricFamily(
            "email_worker_backlog_messages",
            "Messages received and waiting for a worker thread, by priority class (high: "
            "PRIORITY_HIGH and above; they are taken first).",
            labels=["priority"],
        )
        for label, count in zip(("high", "low"), src.backlog(), strict=True):
            backlog.add_metric([label], count)
        yield backlog
        yield from _smtp_gauges(src.smtp_pool())
        pending = src.pending_callbacks()
        if pending is not None:
            yield GaugeMetricFamily(
                "email_worker_callbacks_pending", "Outbox rows not yet delivered.", pending
            )
        yield from self._queue_gauges()

    def _queue_gauges(self) -> Iterable[Metric]:
        stats = self._sources.queues()
        if stats is None:
            return
        messages = GaugeMetricFamily(
            "email_worker_queue_messages", "Ready messages in the queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "email_worker_queue_consumers", "Consumers on the email queue.", labels=["queue"]
        )
        for name, value in stats.items():
            messages.add_metric([name], value.messages)
            if name == self._sources.email_queue:
                consumers.add_metric([name], value.consumers)
        yield messages
        yield consumers


def _paused_gauge(paused: bool, cause: str | None) -> Metric:
    """``email_worker_consumer_paused``: 0 without labels while consuming; 1 with ``cause``
    (the reason code) while paused. An expression on the bare name keeps working."""
    gauge = Metric(
        "email_worker_consumer_paused",
        "1 while consumption is paused; the cause label says why (e.g. smtp_auth_failed).",
        "gauge",
    )
    if paused:
        gauge.add_sample("email_worker_consumer_paused", {"cause": cause or "unknown"}, 1.0)
    else:
        gauge.add_sample("email_worker_consumer_paused", {}, 0.0)
    return gauge


def _smtp_gauges(counts: PoolCounts) -> Iterable[Metric]:
    connections = GaugeMetricFamily(
        "email_worker_smtp_connections",
        "Connections to the SMTP relay: busy (in a transaction or being opened) or idle.",
        labels=["state"],
    )
    connections.add_metric(["busy"], counts.busy)
    connections.add_metric(["idle"], counts.idle)
    yield connections
    yield GaugeMetricFamily(
        "email_worker_smtp_sends_waiting",
        "Sends waiting for a free SMTP connection (all SMTP_CONNECTIONS busy).",
        counts.waiting,
    )
