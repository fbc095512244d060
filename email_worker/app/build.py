"""Settings into adapters: every concrete object a command needs is built here, from the one
``Settings``, and nowhere else (the worker's pipeline and handler, the service clients, the
mailer, the callback dispatcher for the Celery processes and the inline notifier, the topology).
"""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.broker.publisher import Publisher
from email_worker.broker.retry_copies import keep
from email_worker.broker.setup import start_up
from email_worker.broker.topology import Topology, connection_parameters, connector
from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.inline import InlineNotifier
from email_worker.callbacks.sender import CallbackHttp
from email_worker.callbacks.tasks import CeleryNotifier, Runtime, make_celery
from email_worker.callbacks.url_policy import UrlPolicy, host_allowed
from email_worker.config import Settings
from email_worker.disposition import RetryPolicy
from email_worker.handler import Handler
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import MESSAGE_ID_KEY_NAME, get_or_create_secret
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ops.metrics import MeteredMailer, WorkerMetrics
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Notifier
from email_worker.recipients import RecipientDirectory, UserServiceClient
from email_worker.render.renderer import TemplateRenderer
from email_worker.smtp.mailer import SmtpMailer
from templates_client.client import TemplateClient
from templates_client.transport import HttpClient, make_http_client


def secret_value(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else None


def declare_topology(settings: Settings) -> Topology:
    """Declare (or check, in passive mode) the topology; raises ``TopologyError``."""
    topology = Topology.from_settings(settings)
    amqp = settings.amqp_url.get_secret_value()
    connect = connector(amqp, settings.heartbeat_seconds, "email-worker setup")
    start_up(connect, topology, passive=settings.passive_topology)
    return topology


@dataclass
class ServiceClients:
    """The template service client and the optional user service client, sharing one HTTP
    client."""

    http: HttpClient
    templates: TemplateClient
    users: UserServiceClient | None

    def close(self) -> None:
        self.http.close()


def service_clients(settings: Settings) -> ServiceClients:
    http = make_http_client(settings.http_timeout)
    templates = TemplateClient(
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
    users = None
    if settings.user_service_url:
        users = UserServiceClient(
            settings.user_service_url,
            http,
            secret_value(settings.user_service_token),
            path=settings.user_service_path,
            auth_header=settings.user_service_auth_header,
            fields=settings.user_field_paths(),
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
        )
    return ServiceClients(http, templates, users)


def mailer(settings: Settings) -> SmtpMailer:
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


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        delays=tuple(settings.retry_delays),
        max_deferrals=settings.max_deferrals,
        jitter=settings.retry_jitter,
    )


def pipeline_config(settings: Settings, db: Database) -> PipelineConfig:
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
        host_allowed=host_allowed,
        record_patience_seconds=min(30.0, settings.lease_seconds / 2),
    )


def handler(
    settings: Settings,
    db: Database,
    services: ServiceClients,
    smtp: SmtpMailer,
    notifier: Notifier,
    metrics: WorkerMetrics,
) -> Handler:
    """The handler over the pipeline with every port wired to its adapter."""
    pipeline = Pipeline(
        pipeline_config(settings, db),
        PgLedger(
            db,
            lease_seconds=settings.lease_seconds,
            max_deliveries=settings.max_deliveries,
            observe_batch=metrics.ledger_batch,
        ),
        RecipientDirectory(services.users),
        services.templates,
        TemplateRenderer(
            max_rendered_bytes=settings.max_rendered_bytes,
            max_render_seconds=settings.max_render_seconds,
        ),
        MeteredMailer(smtp, metrics.send_duration),
        notifier,
    )
    return Handler(
        pipeline, retry_policy(settings), keep, max_message_bytes=settings.max_message_bytes
    )


def callback_sender(settings: Settings) -> CallbackHttp:
    """The callback sender: ``CALLBACK_TIMEOUT``, and a policy that trusts the origin of
    ``CALLBACK_URL`` and holds every other URL to ``CALLBACK_ALLOWED_HOSTS``."""
    policy = UrlPolicy(settings.callback_allowed_hosts, [settings.callback_url])
    return CallbackHttp(settings.callback_timeout, policy=policy)


def callback_dispatcher(settings: Settings, db: Database, http: CallbackHttp) -> CallbackDispatcher:
    """The dispatcher, built here for every process that delivers callbacks (the Celery
    ``callbacks`` workers, beat's re-drive and the inline notifier)."""
    secret = settings.callback_secret
    return CallbackDispatcher(
        db,
        http,
        secret=secret.get_secret_value() if secret else None,
        lease_seconds=settings.callback_lease_seconds,
        max_age_hours=settings.callback_max_age_hours,
        shape=settings.callback_shape(),
    )


def callback_runtime(settings: Settings) -> Runtime:
    """What the ``callbacks`` and ``beat`` processes use: the database, the sender, the
    dispatcher and a publisher that re-drives overdue retries (connects on first use)."""
    db = Database(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    http = callback_sender(settings)
    amqp = settings.amqp_url.get_secret_value()
    publisher = Publisher(
        connection_parameters(amqp, settings.heartbeat_seconds, "email-worker beat")
    )
    return Runtime(settings, db, http, callback_dispatcher(settings, db, http), publisher)


def inline_notifier(settings: Settings) -> InlineNotifier:
    """Callbacks delivered in-process (the demo, single-process setups, tests)."""
    db = Database(settings.database_url.get_secret_value(), pool_size=2)
    http = callback_sender(settings)
    return InlineNotifier(callback_dispatcher(settings, db, http), owned=(db, http))


def celery_notifier(settings: Settings) -> CeleryNotifier:
    return CeleryNotifier(make_celery(settings.broker_for_celery, settings.callback_queue))
