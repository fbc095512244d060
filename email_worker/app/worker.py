"""``email-worker run``: the worker wired from ``build`` (handler, consumer, settler, health
server, status API), its readiness, its start-up checks, its signals and its drain.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from prometheus_client import REGISTRY

from email_worker.app import build
from email_worker.broker.consumer import Consumer, pause_explanation
from email_worker.broker.publisher import Publisher
from email_worker.broker.queue_stats import queue_stats
from email_worker.broker.settle import Settler
from email_worker.broker.topology import Topology, connection_parameters
from email_worker.callbacks.outbox import pending_callbacks
from email_worker.config import Settings
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import check_applied
from email_worker.ops.health import HealthServer, Readiness, TcpProbe
from email_worker.ops.metrics import Cached, LiveGauges, LiveSources, WorkerMetrics
from email_worker.ops.status_api import StatusApi, StatusReader
from email_worker.ports import Delivery, Notifier
from schemas.failures import DeferredFailure

log = logging.getLogger(__name__)


class Worker:
    """``email-worker run``: consume until ``stop()`` (SIGTERM/SIGINT), drain, return."""

    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.db = Database(
            settings.database_url.get_secret_value(), pool_size=settings.db_pool_size
        )
        # Scrapes and status queries get a pool of their own: they never take a connection
        # the pipeline is waiting for.
        self.observer_db = Database(settings.database_url.get_secret_value(), pool_size=2)
        self.metrics = WorkerMetrics()
        self._services = build.service_clients(settings)
        self.templates, self.users = self._services.templates, self._services.users
        self.mailer = build.mailer(settings)
        self.notifier = notifier or build.celery_notifier(settings)
        self.topology = Topology.from_settings(settings)
        self.handler = build.handler(
            settings, self.db, self._services, self.mailer, self.notifier, self.metrics
        )
        amqp = settings.amqp_url.get_secret_value()
        self.publisher = Publisher(
            connection_parameters(amqp, settings.heartbeat_seconds, "email-worker publisher")
        )
        self.consumer = Consumer(
            connection_parameters(amqp, settings.heartbeat_seconds, "email-worker consumer"),
            settings.email_queue,
            self.process,
            prefetch=settings.prefetch,
            concurrency=settings.concurrency,
            drain_seconds=settings.drain_seconds,
        )
        self.settler = Settler(
            self.publisher,
            self.topology,
            self.consumer,
            pause_seconds=settings.pause_seconds,
            on_settled=self.metrics.settled,
        )
        self.smtp_probe = TcpProbe(
            settings.smtp_host,
            settings.smtp_port,
            interval=settings.smtp_probe_interval_seconds,
            timeout=min(2.0, settings.smtp_timeout),
        )
        self.metrics.registry.register(LiveGauges(self._live_sources()))

    def _live_sources(self) -> LiveSources:
        settings = self.settings
        params = connection_parameters(
            settings.amqp_url.get_secret_value(), 0, "email-worker metrics"
        )
        # A scrape must answer quickly even when the broker does not.
        params.socket_timeout, params.stack_timeout, params.blocked_connection_timeout = 2, 3, 3
        queues = (settings.email_queue, settings.failed_queue)
        ttl = settings.metrics_cache_seconds
        breakers = {"template_service": lambda: self.templates.breaker_state}
        if self.users is not None:
            users = self.users
            breakers["user_service"] = lambda: users.breaker_state
        return LiveSources(
            breakers=breakers,
            in_flight=lambda: self.consumer.in_flight,
            paused=lambda: self.consumer.paused,
            pause_cause=lambda: self.consumer.pause_cause,
            pending_callbacks=Cached(lambda: pending_callbacks(self.observer_db), ttl).get,
            queues=Cached(lambda: queue_stats(params, queues), ttl).get,
            email_queue=settings.email_queue,
            smtp_pool=self.mailer.pool_counts,
        )

    def process(self, delivery: Delivery) -> None:
        """Handle one delivery to a decision, then settle it (``settlement.Settler``)."""
        self.metrics.received()
        decision = self.handler.handle(delivery)
        self.metrics.decided(decision, delivery.properties.timestamp)
        self.settler.settle(delivery, decision)

    def readiness(self) -> Readiness:
        """Gating: the consumer is connected (consuming, or deliberately paused), the database
        answers, the relay accepts TCP connections and consumption is not paused (the body
        names the pause's cause). Breaker states are reported but do not gate: an outage of a
        shared dependency would otherwise take every replica out of service at once, and the
        breakers already defer the work."""
        cause = self.consumer.pause_cause
        breakers = {"template_service": self.templates.breaker_state}
        breakers["user_service"] = self.users.breaker_state if self.users else "disabled"
        return Readiness(
            checks={
                "broker": self.consumer.consuming or cause is not None,
                "database": self.db.ping(),
                "smtp": self.smtp_probe.reachable(),
                "consumption": cause is None,
            },
            info=breakers,
            paused=None if cause is None else {"cause": cause, "detail": pause_explanation(cause)},
        )

    def status_api(self) -> StatusApi:
        token = build.secret_value(self.settings.status_api_token)
        reader = StatusReader(
            self.observer_db, expose_content=self.settings.status_api_expose_content
        )
        return StatusApi(reader, token=token, open_access=self.settings.status_api_open)

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until stopped; returns after draining. Raises ``TopologyError`` or
        ``SchemaBehind`` at start-up."""
        self._check_schema()
        build.declare_topology(self.settings)
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        health = None
        if self.settings.http_port:
            health = HealthServer(
                self.settings.http_host,
                self.settings.http_port,
                self.readiness,
                registries=(self.metrics.registry, REGISTRY),
                api=self.status_api(),
            ).start()
        try:
            self.consumer.run()
        finally:
            if health is not None:
                health.stop()
            self.close()

    def stop(self) -> None:
        self.consumer.stop()

    def _check_schema(self) -> None:
        # A worker newer than the schema would fail every message; one that cannot reach the
        # database yet starts anyway (the pipeline defers until it answers).
        try:
            check_applied(self.db)
        except DeferredFailure:
            log.warning("could not check the database schema: the database is unreachable")

    def close(self) -> None:
        close_notifier = getattr(self.notifier, "close", None)
        if callable(close_notifier):
            close_notifier()
        self.publisher.close()
        self.mailer.close()
        self._services.close()
        self.observer_db.close()
        self.db.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: draining in-flight messages", extra={"signal": signum})
        self.stop()
