"""Settings into adapters: every concrete object a command needs is built here, from the one
``Settings``, and nowhere else (the worker's pipeline and handler, the service clients, the
mailer, the callback dispatcher for the Celery processes and the inline notifier, the topology).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from email_worker.app.relays import RelaySet, relay_set, sandbox_complaints
from email_worker.broker.lane import Lane
from email_worker.broker.publisher import Publisher
from email_worker.broker.release import Releaser
from email_worker.broker.retry_copies import keep
from email_worker.broker.setup import start_up
from email_worker.broker.topology import Topology, connection_parameters, connector
from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.inline import InlineNotifier
from email_worker.callbacks.sender import CallbackHttp
from email_worker.callbacks.tasks import CeleryNotifier, Runtime, make_celery
from email_worker.callbacks.trace_context import CallbackTracing
from email_worker.callbacks.url_policy import UrlPolicy, host_allowed
from email_worker.config import Settings
from email_worker.disposition import RetryPolicy
from email_worker.dkim import DkimSigner, load_signing_key
from email_worker.handler import Handler
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import MESSAGE_ID_KEY_NAME, get_or_create_secret
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ledger.rate_routes import PgRateStore
from email_worker.ledger.reports import PgReportLedger
from email_worker.ledger.suppressions import PgSuppressions, SuppressionStore
from email_worker.ops.health import HttpRoute
from email_worker.ops.metrics import MeteredMailer, WorkerMetrics, count_report
from email_worker.pacing import PacerConfig, RateStore, Recovery, RoutePacer, parse_domain_limits
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Mailer, Notifier, Pacer, RelayPacer, Spans
from email_worker.recipients import RecipientDirectory, UserServiceClient
from email_worker.render.renderer import TemplateRenderer
from email_worker.reports.intake import ReportIntake
from email_worker.suppression.endpoint import PREFIX as UNSUBSCRIBE_PREFIX
from email_worker.suppression.endpoint import UnsubscribeEndpoint
from email_worker.suppression.policy import BulkMail
from email_worker.suppression.tokens import KEY_NAME as UNSUBSCRIBE_KEY_NAME
from email_worker.suppression.tokens import LazyTokens, UnsubscribeLinks
from email_worker.tracing import telemetry
from email_worker.webhooks.dispatch import WebhookDispatcher
from email_worker.webhooks.setup import WebhookConfig, webhook_dispatcher
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


def lane(settings: Settings) -> Lane | None:
    """The bulk lane (``PRIORITY_LANE_QUEUE``) and the parameters of the connection that moves
    messages there, or None when it is turned off."""
    if settings.lane_queue is None:
        return None
    amqp = settings.amqp_url.get_secret_value()
    params = connection_parameters(amqp, settings.heartbeat_seconds, "email-worker lane")
    return Lane(settings.lane_queue, params, settings.email_queue)


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


def mailer(
    settings: Settings,
    metrics: WorkerMetrics,
    db: Database,
    notifier: Notifier,
    pacer: RelayPacer | None = None,
) -> RelaySet:
    """The relays (``RELAYS``, else the ``SMTP_*`` settings; the sandbox alone with
    ``SANDBOX=true``, its complaint reports going to the report intake) behind one router,
    each send counted by relay and result; every relay signs with the DKIM key; each relay
    waits for its own turn of ``pacer`` (``build.pacer``: a throttled relay slows itself)."""
    complaints = None
    if settings.sandbox:
        intake = ReportIntake(PgReportLedger(db), SuppressionStore(db), notifier, count_report)
        complaints = sandbox_complaints(intake)
    sign = dkim_signer(settings)
    relays = relay_set(
        settings, metrics.sent_through, sign=sign, complaints=complaints, pacer=pacer
    )
    metrics.relays(relays.names)
    return relays


def dkim_signer(settings: Settings) -> Callable[[bytes], bytes] | None:
    """``DkimSigner.sign`` when ``DKIM_*`` are set (checked together at start-up), else None:
    what every transport that sends raw MIME applies to the built message."""
    key_file, domain, selector = (
        settings.dkim_private_key_file,
        settings.dkim_domain,
        settings.dkim_selector,
    )
    if key_file is None or domain is None or selector is None:
        return None
    return DkimSigner(domain, selector, load_signing_key(key_file)).sign


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
    sender = settings.sender()  # CONTRACT 11: the From mailbox, Reply-To, the envelope sender
    return PipelineConfig(
        sender=sender.address,
        sender_name=sender.name,
        reply_to=settings.reply_to_mailbox(),
        envelope_from=settings.return_path,
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
    mailer: Mailer,
    notifier: Notifier,
    metrics: WorkerMetrics,
    spans: Spans | None = None,
    pacer: Pacer | None = None,
) -> Handler:
    """The handler over the pipeline with every port wired to its adapter (``spans``: the
    worker's ``tracing.telemetry``; None, tracing off; ``pacer``: ``build.pacer``)."""
    pipeline = Pipeline(
        pipeline_config(settings, db),
        PgLedger(
            db,
            lease_seconds=settings.lease_seconds,
            max_deliveries=settings.max_deliveries,
            observe_batch=metrics.ledger_batch,
            check_suppressions=True,  # the list read with the claim: one statement less
        ),
        RecipientDirectory(services.users),
        services.templates,
        TemplateRenderer(
            max_rendered_bytes=settings.max_rendered_bytes,
            max_render_seconds=settings.max_render_seconds,
        ),
        MeteredMailer(mailer, metrics.send_duration, metrics.exemplar),
        notifier,
        spans=spans,
        pacer=pacer,
        suppressions=PgSuppressions(
            SuppressionStore(db), hard_bounces=settings.suppress_hard_bounces
        ),
        bulk=bulk_mail(settings, db),
    )
    return Handler(
        pipeline,
        retry_policy(settings),
        keep,
        max_message_bytes=settings.max_message_bytes,
        max_schedule_days=settings.max_schedule_days,
    )


def pacer(settings: Settings, metrics: WorkerMetrics) -> RoutePacer:
    """Rate limits and throttling (CONTRACT 12) over the shared store: Redis when
    ``REDIS_URL`` is set (redis-py imported only then), else a small Postgres pool of its own.
    Neither is called while no limit is set and no relay has throttled."""
    recovery, margin = Recovery(), settings.rate_limit_margin
    store: RateStore
    redis_url = secret_value(settings.redis_url)
    if redis_url:
        from email_worker.redis_store import RedisRateStore

        store = RedisRateStore(redis_url, margin=margin, recovery=recovery)
    else:
        db = Database(settings.database_url.get_secret_value(), pool_size=2)
        store = PgRateStore(db, margin=margin, recovery=recovery)
    config = PacerConfig(
        relay_rate=settings.rate_limit,
        domain_rates=parse_domain_limits(settings.domain_rate_limits),
        max_wait=settings.rate_limit_max_wait_seconds,
        margin=margin,
        recovery=recovery,
        # Each relay's ``?rate=`` (RELAYS; docs/rate-limits.md): the route ``relay:<name>``.
        relay_rates={
            spec.name: spec.rate
            for spec in ([] if settings.sandbox else settings.relay_specs())
            if spec.rate is not None
        },
    )
    built = RoutePacer(config, store, metrics)
    metrics.watch_routes(built.rates)
    return built


def unsubscribe_tokens(db: Database) -> LazyTokens:
    # Like the Message-ID key: made once, kept in the database, the same on every replica;
    # loaded on first use, so a worker starting while Postgres is down still starts.
    return LazyTokens(lambda: get_or_create_secret(db, UNSUBSCRIBE_KEY_NAME))


def bulk_mail(settings: Settings, db: Database) -> BulkMail:
    """``PRIORITY_HIGH`` and, when ``UNSUBSCRIBE_URL`` is set, one-click links for bulk mail."""
    url = settings.unsubscribe_url
    links = UnsubscribeLinks(url, unsubscribe_tokens(db)) if url else None
    return BulkMail(
        priority_high=settings.priority_high,
        links=links,
        unsubscribe_stops_bulk_only=settings.unsubscribe_scope == "bulk",
    )


def http_routes(settings: Settings, db: Database) -> dict[str, HttpRoute]:
    """The routes the HTTP port serves beside probes, metrics and the status API. The
    unsubscribe endpoint is always served: links in mail sent while ``UNSUBSCRIBE_URL`` was
    set must keep working after it is unset."""
    store = SuppressionStore(db)
    return {UNSUBSCRIBE_PREFIX: UnsubscribeEndpoint(unsubscribe_tokens(db), store)}


def webhooks(settings: Settings, notifier: Notifier) -> WebhookDispatcher | None:
    """The bounce and complaint route (``/webhooks/``, CONTRACT section 15) over a database
    pool of its own (closed with it); None when no provider's setting is set."""
    username, password = settings.postmark_webhook_username, settings.postmark_webhook_password
    cert_file = settings.ses_sns_cert_file
    config = WebhookConfig(
        ses_certificates=cert_file.read_bytes() if cert_file else None,
        sendgrid_public_key=settings.sendgrid_webhook_public_key,
        mailgun_signing_key=secret_value(settings.mailgun_webhook_signing_key),
        postmark=(username, password.get_secret_value()) if username and password else None,
        dsn_token=secret_value(settings.dsn_webhook_token),
    )
    if not config.any:
        return None
    db = Database(settings.database_url.get_secret_value(), pool_size=2)
    return webhook_dispatcher(config, db, notifier)


def callback_sender(settings: Settings) -> CallbackHttp:
    """The callback sender: ``CALLBACK_TIMEOUT``, and a policy that trusts the origin of
    ``CALLBACK_URL`` and holds every other URL to ``CALLBACK_ALLOWED_HOSTS``."""
    policy = UrlPolicy(settings.callback_allowed_hosts, [settings.callback_url])
    return CallbackHttp(settings.callback_timeout, policy=policy)


def callback_dispatcher(
    settings: Settings,
    db: Database,
    http: CallbackHttp,
    *,
    traced: bool = False,
    tracing: CallbackTracing | None = None,
) -> CallbackDispatcher:
    """The dispatcher, built here for every process that delivers callbacks (the Celery
    ``callbacks`` workers, beat's re-drive and the inline notifier). ``traced``: its own
    callback spans when tracing is on (the ``callbacks`` process; ``tracing`` gives them from
    a ``Telemetry`` the caller keeps, to flush it); otherwise each row's recorded
    ``traceparent`` is forwarded as it is."""
    if tracing is None and traced:
        tracing = telemetry(settings, "callbacks").callbacks
    secret = settings.callback_secret
    return CallbackDispatcher(
        db,
        http,
        secret=secret.get_secret_value() if secret else None,
        lease_seconds=settings.callback_lease_seconds,
        max_age_hours=settings.callback_max_age_hours,
        shape=settings.callback_shape(),
        # A span per POST, a child of the message's (CONTRACT 18).
        tracing=tracing,
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
    traces = telemetry(settings, "callbacks")  # its shutdown flushes the spans at close
    dispatcher = callback_dispatcher(settings, db, http, tracing=traces.callbacks)
    return Runtime(settings, db, http, dispatcher, publisher, shutdown=traces.shutdown)


def inline_notifier(settings: Settings) -> InlineNotifier:
    """Callbacks delivered in-process (the demo, single-process setups, tests)."""
    db = Database(settings.database_url.get_secret_value(), pool_size=2)
    http = callback_sender(settings)
    return InlineNotifier(callback_dispatcher(settings, db, http), owned=(db, http))


def celery_notifier(settings: Settings) -> CeleryNotifier:
    return CeleryNotifier(make_celery(settings.broker_for_celery, settings.callback_queue))


def releaser(settings: Settings) -> Releaser:
    """The release of scheduled sends for ``run``, on a connection and a database pool of its
    own: a slow broker or a busy pool never holds up the other."""
    amqp = settings.amqp_url.get_secret_value()
    publisher = Publisher(
        connection_parameters(amqp, settings.heartbeat_seconds, "email-worker release")
    )
    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    return Releaser(
        db,
        publisher,
        settings.email_queue,
        interval=settings.schedule_poll_seconds,
        owned=(publisher, db),
    )
