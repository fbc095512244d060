"""The composition root: builds every adapter from ``Settings`` and wires them into the
pipeline and the consumer. The only place that knows all the concrete classes.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import httpx
import pika
from prometheus_client import REGISTRY

from email_worker.broker.consumer import Consumer, pause_explanation
from email_worker.broker.publisher import Publisher
from email_worker.broker.retry_copies import keep
from email_worker.broker.settle import Settler
from email_worker.broker.setup import start_up
from email_worker.broker.topology import Topology, connection_parameters
from email_worker.callbacks.tasks import CeleryNotifier, make_celery
from email_worker.callbacks.url_policy import host_allowed
from email_worker.config import Settings
from email_worker.disposition import RetryPolicy
from email_worker.handler import Handler
from email_worker.health import HealthServer, Readiness, TcpProbe
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import MESSAGE_ID_KEY_NAME, check_applied, get_or_create_secret
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.metrics import (
    Cached,
    LiveGauges,
    LiveSources,
    MeteredMailer,
    WorkerMetrics,
    pending_callbacks,
    queue_stats,
)
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Delivery, Notifier
from email_worker.recipients import RecipientDirectory, UserServiceClient
from email_worker.render.renderer import TemplateRenderer
from email_worker.smtp.mailer import SmtpMailer
from email_worker.status_api import StatusApi, StatusReader
from schemas.failures import DeferredFailure
from templates_client.client import TemplateClient
from templates_client.transport import make_http_client

log = logging.getLogger(__name__)


def secret_value(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else None


def declare_topology(settings: Settings) -> Topology:
    """Declare (or check, in passive mode) the topology; raises ``TopologyError``."""
    topology = Topology.from_settings(settings)
    params = connection_parameters(
        settings.amqp_url.get_secret_value(), settings.heartbeat_seconds, "email-worker setup"
    )
    start_up(lambda: pika.BlockingConnection(params), topology, passive=settings.passive_topology)
    return topology


def _user_service(settings: Settings, http: httpx.Client) -> UserServiceClient | None:
    if not settings.user_service_url:
        return None
    return UserServiceClient(
        settings.user_service_url,
        http,
        secret_value(settings.user_service_token),
        path=settings.user_service_path,
        auth_header=settings.user_service_auth_header,
        fields=settings.user_field_paths(),
        fail_max=settings.breaker_fail_max,
        reset_seconds=settings.breaker_reset_seconds,
    )


def _template_client(settings: Settings, http: httpx.Client) -> TemplateClient:
    return TemplateClient(
        settings.template_service_url,
        http,
        path=settings.template_path,
        token=secret_value(settings.template_service_token),
        fields=settings.template_field_paths(),
        default_language=settings.template_default_language,
        cache_seconds=settings.template_cache_seconds,
        fail_max=settings.breaker_fail_max,
        reset_seconds=settings.breaker_reset_seconds,
    )


def _mailer(settings: Settings) -> SmtpMailer:
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=secret_value(settings.smtp_password),
        timeout=settings.smtp_timeout,
        ca_file=settings.smtp_ca_file,
        max_connections=settings.smtp_connections,
    )


def _pipeline_config(settings: Settings, db: Database) -> PipelineConfig:
    # The Message-ID key must be the same on every replica and survive restarts: from the
    # settings when given, else generated once by `migrate` and kept in the database.
    secret = secret_value(settings.message_id_secret)
    return PipelineConfig(
        sender=settings.from_address,
        message_id_secret=secret.encode()
        if secret
        else get_or_create_secret(db, MESSAGE_ID_KEY_NAME),
        callback_url=settings.callback_url,
        callback_allowed_hosts=tuple(settings.callback_allowed_hosts),
        record_patience_seconds=min(30.0, settings.lease_seconds / 2),
        host_allowed=host_allowed,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        delays=tuple(settings.retry_delays),
        max_deferrals=settings.max_deferrals,
        jitter=settings.retry_jitter,
    )


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
        self._http = make_http_client(settings.http_timeout)
        self.templates = _template_client(settings, self._http)
        self.users = _user_service(settings, self._http)
        self.mailer = _mailer(settings)
        self.notifier = notifier or CeleryNotifier(
            make_celery(settings.broker_for_celery, settings.callback_queue)
        )
        self.topology = Topology.from_settings(settings)
        pipeline = Pipeline(
            _pipeline_config(settings, self.db),
            PgLedger(
                self.db,
                lease_seconds=settings.lease_seconds,
                prepared=settings.db_prepared_statements,
                max_deliveries=settings.max_deliveries,
                observe_batch=self.metrics.ledger_batch,
            ),
            RecipientDirectory(self.users),
            self.templates,
            TemplateRenderer(
                max_rendered_bytes=settings.max_rendered_bytes,
                max_render_seconds=settings.max_render_seconds,
            ),
            MeteredMailer(self.mailer, self.metrics.send_duration),
            self.notifier,
        )
        self.handler = Handler(
            pipeline, retry_policy(settings), keep, max_message_bytes=settings.max_message_bytes
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
        token = secret_value(self.settings.status_api_token)
        reader = StatusReader(
            self.observer_db, expose_content=self.settings.status_api_expose_content
        )
        return StatusApi(reader, token=token, open_access=self.settings.status_api_open)

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until stopped; returns after draining. Raises ``TopologyError`` or
        ``SchemaBehind`` at start-up."""
        self._check_schema()
        declare_topology(self.settings)
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
        self._http.close()
        self.observer_db.close()
        self.db.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: draining in-flight messages", extra={"signal": signum})
        self.stop()
