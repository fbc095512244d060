"""``email-worker run``: the worker wired from ``build`` (handler, consumer, settler, health
server, status API), its readiness, its start-up checks, its signals and its drain.
"""

from __future__ import annotations

import functools
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
from email_worker.ops import cancel_api
from email_worker.ops.cancel_api import ledger_canceller
from email_worker.ops.health import HealthServer, Readiness
from email_worker.ops.metrics import Cached, LiveGauges, LiveSources, WorkerMetrics
from email_worker.ops.status_api import StatusApi, StatusReader
from email_worker.ports import Delivery, Notifier
from email_worker.priority import LanePolicy
from email_worker.tracing import telemetry
from email_worker.webhooks.dispatch import PREFIX as WEBHOOKS_PREFIX
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
        # Tracing (CONTRACT 18): the SDK is built only when an OTLP endpoint is set.
        self.telemetry = telemetry(settings, "run")
        self.metrics = WorkerMetrics(self.telemetry.exemplar)
        self._services = build.service_clients(settings)
        self.templates, self.users = self._services.templates, self._services.users
        self.notifier = notifier or build.celery_notifier(settings)
        self.pacer = build.pacer(settings, self.metrics)  # rate limits (docs/rate-limits.md)
        # The relays (docs/relays.md), each waiting for its own turn of the pacer.
        self.mailer = build.mailer(settings, self.metrics, self.db, self.notifier, self.pacer)
        self.topology = Topology.from_settings(settings)
        self.handler = build.handler(
            settings,
            self.db,
            self._services,
            self.mailer.router,
            self.notifier,
            self.metrics,
            spans=self.telemetry.spans,
            pacer=self.pacer,
        )
        amqp = settings.amqp_url.get_secret_value()
        self.publisher = Publisher(
            connection_parameters(amqp, settings.heartbeat_seconds, "email-worker publisher")
        )
        self.lane = build.lane(settings)  # the bulk lane (docs/priority.md), or None
        self.consumer = Consumer(
            connection_parameters(amqp, settings.heartbeat_seconds, "email-worker consumer"),
            settings.email_queue,
            self.process,
            prefetch=settings.prefetch,
            concurrency=settings.concurrency,
            drain_seconds=settings.drain_seconds,
            policy=LanePolicy(
                settings.priority_high,
                settings.lane_threshold,
                bool(self.lane),
                settings.priority_lane_seconds,
            ),
            lane=self.lane,
            pause_seconds=settings.pause_seconds,
            max_message_bytes=settings.max_message_bytes,
            on_move=self.metrics.lane_moved,
        )
        self.settler = Settler(
            self.publisher,
            self.topology,
            self.consumer,
            pause_seconds=settings.pause_seconds,
            on_settled=self.metrics.settled,
        )
        self.metrics.registry.register(LiveGauges(self._live_sources()))

    def _live_sources(self) -> LiveSources:
        settings = self.settings
        params = connection_parameters(
            settings.amqp_url.get_secret_value(), 0, "email-worker metrics"
        )
        # A scrape must answer quickly even when the broker does not.
        params.socket_timeout, params.stack_timeout, params.blocked_connection_timeout = 2, 3, 3
        lane = () if self.lane is None else (self.lane.queue,)
        queues = (settings.email_queue, settings.failed_queue, *lane)
        ttl = settings.metrics_cache_seconds
        breakers = {"template_service": lambda: self.templates.breaker_state}
        if self.users is not None:
            users = self.users
            breakers["user_service"] = lambda: users.breaker_state
        relays = self.mailer.breaker_states
        for name in self.mailer.names:  # each relay's own breaker, "relay:<name>"
            breakers[f"relay:{name}"] = functools.partial(lambda n: relays()[n], name)
        return LiveSources(
            breakers=breakers,
            in_flight=lambda: self.consumer.in_flight,
            paused=lambda: self.consumer.paused,
            pause_cause=lambda: self.consumer.pause_cause,
            pending_callbacks=Cached(lambda: pending_callbacks(self.observer_db), ttl).get,
            queues=Cached(lambda: queue_stats(params, queues), ttl).get,
            email_queue=settings.email_queue,
            smtp_pool=self.mailer.pool_counts,
            backlog=self.consumer.dispatcher.backlog.waiting,
        )

    def process(self, delivery: Delivery) -> None:
        """Handle one delivery to a decision, then settle it (``settlement.Settler``)."""
        self.metrics.received()
        decision = self.handler.handle(delivery)
        self.metrics.decided(decision, delivery.properties.timestamp)
        self.settler.settle(delivery, decision)

    def readiness(self) -> Readiness:
        """Gating: the consumer is connected (consuming, or deliberately paused), the database
        answers, at least one relay accepts TCP connections (``relays`` reports each by name,
        with its breaker) and consumption is not paused (the body names the pause's cause).
        Breaker states are reported but do not gate: an outage of a shared dependency would
        otherwise take every replica out of service at once, and the breakers already defer
        the work."""
        cause = self.consumer.pause_cause
        breakers = {"template_service": self.templates.breaker_state}
        breakers["user_service"] = self.users.breaker_state if self.users else "disabled"
        reachable, resting = self.mailer.reachable(), self.mailer.breaker_states()
        return Readiness(
            checks={
                "broker": self.consumer.consuming or cause is not None,
                "database": self.db.ping(),
                "relays": any(reachable.values()),
                "consumption": cause is None,
            },
            info=breakers,
            relays={
                name: {"reachable": up, "breaker": resting[name]} for name, up in reachable.items()
            },
            paused=None if cause is None else {"cause": cause, "detail": pause_explanation(cause)},
        )

    def status_api(self) -> StatusApi:
        token = build.secret_value(self.settings.status_api_token)
        reader = StatusReader(
            self.observer_db, expose_content=self.settings.status_api_expose_content
        )
        cancel = ledger_canceller(
            self.observer_db, callback_url=self.settings.callback_url, notifier=self.notifier
        )
        return StatusApi(
            reader, token=token, open_access=self.settings.status_api_open, cancel=cancel
        )

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until stopped; returns after draining. Raises ``TopologyError`` or
        ``SchemaBehind`` at start-up."""
        self._check_schema()
        build.declare_topology(self.settings)
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        health = webhooks = None
        if self.settings.http_port:
            api = self.status_api()
            # The status API's POST side (the cancel) is a route of the health server.
            cancel_route = {cancel_api.PREFIX: cancel_api.post_route(api.post)}
            routes = build.http_routes(self.settings, self.observer_db) | cancel_route
            # Bounce and complaint reports (CONTRACT 15); None when no provider is set up.
            webhooks = build.webhooks(self.settings, self.notifier)
            if webhooks is not None:
                routes[WEBHOOKS_PREFIX] = webhooks
            health = HealthServer(
                self.settings.http_host,
                self.settings.http_port,
                self.readiness,
                registries=(self.metrics.registry, REGISTRY),
                api=api,
                routes=routes,
            ).start()
        # Scheduled sends whose send_at came go back to the queue (CONTRACT section 14).
        releaser = build.releaser(self.settings).start()
        try:
            self.consumer.run()
        finally:
            releaser.stop()
            if health is not None:
                health.stop()
            if webhooks is not None:
                webhooks.close()
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
        self.pacer.close()
        self._services.close()
        self.observer_db.close()
        self.db.close()
        self.telemetry.shutdown()  # after the drain: the last messages' spans are exported

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping: draining in-flight messages", extra={"signal": signum})
        self.stop()
