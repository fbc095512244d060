"""Settings: the only reader of the environment (prefix ``EMAIL_WORKER_``).

Secrets may come from files: ``EMAIL_WORKER_SMTP_PASSWORD_FILE=/run/secrets/smtp`` reads the
file's content (trailing newline stripped). A bad value raises ``pydantic.ValidationError``; the
CLI turns it into a start-up error that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from email_worker.callbacks.shape import (
    CallbackShape,
    check_url_template,
    parse_extra_fields,
    parse_field_names,
)
from email_worker.callbacks.signing import signing_key
from email_worker.config import otel
from email_worker.config.sender import SENDER_CHECKS, parse_mailbox
from email_worker.config.sources import (
    HEADER_NAME,
    PREFIX,
    SERVICE_SHAPE_CHECKS,
    FileSecretsSource,
    SmtpSecurity,
    check_queue_arguments,
    default_state_dir,
    split_list,
)
from email_worker.dkim.keys import load_signing_key
from email_worker.pacing.routes import parse_domain_limits
from email_worker.ports import Mailbox
from email_worker.providers.credentials import (
    CREDENTIALS,
    URL_SETTINGS,
    check_api_url,
    needing,
)
from email_worker.recipients import USER_FIELD_NAMES
from email_worker.relays.urls import RelaySpec, check_implemented, parse_relays, smtp_spec
from email_worker.suppression.policy import check_unsubscribe_url
from email_worker.webhooks.signatures import check_sendgrid_key, check_sns_certificates
from schemas.inbound import LANGUAGE_PATTERN
from templates_client.fields import parse_field_paths
from templates_client.template import TEMPLATE_FIELD_NAMES

PROVIDER_CREDENTIALS = tuple(sorted({name for names in CREDENTIALS.values() for name in names}))
PROVIDER_URLS = tuple(sorted(URL_SETTINGS.values()))


class Settings(BaseSettings):
    """Every knob of the worker, with defaults that run against the local services."""

    # Errors never carry the value given: several settings hold credentials (RELAYS, URLs).
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", hide_input_in_errors=True)

    # Connections.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    celery_broker_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Deprecated, accepted and ignored (the ledger's statements are no longer prepared):
    # ``deprecations`` says so at start-up, so a deployment that still sets it keeps starting.
    db_prepared_statements: bool | None = None

    # Broker topology (CONTRACT section 2).
    exchange: str = "notifications.direct"
    email_queue: str = "email.queue"
    failed_queue: str = "failed.queue"
    failed_routing_key: str = "failed"
    routing_keys: Annotated[list[str], NoDecode] = ["email", "email.queue"]
    retry_queue_prefix: str = "email.retry"
    callback_queue: str = "email.callbacks"
    queue_type: str = Field(default="quorum", pattern="^(quorum|classic)$")
    # When set, exactly these arguments for an email.queue the worker creates (plus x-queue-type
    # for a quorum queue); unset, the worker's defaults. A JSON object of strings, integers and
    # booleans: what a gateway asserting the queue will declare.
    queue_arguments: dict[str, str | int | bool] | None = None
    retry_queue_type: str = Field(default="quorum", pattern="^(quorum|classic)$")
    delivery_limit: int = Field(default=10, ge=1)
    passive_topology: bool = False

    # Consumer.
    prefetch: int = Field(default=64, ge=1, le=5000)
    concurrency: int = Field(default=32, ge=1, le=256)
    max_message_bytes: int = Field(default=262_144, ge=1024)
    drain_seconds: float = Field(default=60.0, ge=0)
    heartbeat_seconds: int = Field(default=30, ge=0)
    pause_seconds: float = Field(default=30.0, ge=0.1)

    # Priority (CONTRACT section 13, docs/priority.md). The bulk lane: a queue of the worker's
    # own that low-priority deliveries move to while the worker has a backlog; unset, named
    # "<EMAIL_QUEUE>.bulk"; empty, no lane (the local priority order only).
    priority_high: int = Field(default=5, ge=0, le=10)
    priority_lane_queue: str | None = None
    priority_lane_queue_type: str = Field(default="quorum", pattern="^(quorum|classic)$")
    # Unfinished deliveries from the email queue past which low-priority ones move to the
    # lane; unset, half of PREFETCH.
    priority_lane_threshold: int | None = Field(default=None, ge=1)
    # Moves start only when the email queue holds more than this many seconds of sending (a
    # high-priority message published now would wait longer behind it); 0: at the threshold.
    priority_lane_seconds: float = Field(default=1.0, ge=0)

    # Retries and idempotency.
    max_attempts: int = Field(default=5, ge=1, le=100)
    max_deferrals: int = Field(default=200, ge=1)
    retry_delays: Annotated[list[float], NoDecode] = [5, 30, 120, 600, 1800]
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    lease_seconds: float = Field(default=120.0, gt=0)
    retention_days: int = Field(default=30, ge=1)
    message_id_secret: SecretStr | None = None
    # Crash-loop guard counted in the ledger (any queue type): more redeliveries than this
    # without an outcome dead-letter the request with reason redelivery_limit.
    max_deliveries: int = Field(default=5, ge=1)
    # Beat re-publishes a scheduled retry whose copy is this late (the broker lost it).
    retry_overdue_seconds: float = Field(default=300.0, gt=0)
    # Scheduled sends (CONTRACT section 14): how far ahead send_at may be, and how often each
    # `run` looks for held requests that are due.
    max_schedule_days: int = Field(default=30, ge=1, le=3650)
    schedule_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    # SMTP (CONTRACT section 9).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_timeout: float = Field(default=30.0, gt=0)
    # Connections to the relay per `run` process, shared by the CONCURRENCY threads.
    smtp_connections: int = Field(default=8, ge=1, le=256)
    smtp_ca_file: Path | None = None
    # Rate limits shared by every replica (CONTRACT section 12, docs/rate-limits.md): emails a
    # second to the relay and per recipient domain (gmail.com=20,outlook.com=10), kept in
    # Postgres, or in Redis when REDIS_URL is set. Unset: unlimited until a relay throttles.
    rate_limit: float | None = Field(default=None, gt=0)
    domain_rate_limits: str = ""
    redis_url: SecretStr | None = None
    # A send whose slot is further away is deferred at once (no attempt spent).
    rate_limit_max_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    # Slots are (1 + margin) / rate apart: the jitter a relay counting over one second absorbs.
    rate_limit_margin: float = Field(default=0.05, ge=0.01, le=0.5)
    # Several relays with failover (CONTRACT section 16, docs/relays.md): ordered relay URLs,
    # credentials inside (a secret); unset, the SMTP_* settings make the one relay.
    relays: SecretStr | None = None
    sandbox: bool = False  # send nothing: the recipient's local part picks the outcome
    # HTTP API relays (CONTRACT section 16, docs/providers/): credentials (required by a RELAYS
    # entry of their kind) and base URLs overriding the providers' own (regions, tests).
    ses_access_key_id: SecretStr | None = Field(default=None, validate_default=True)
    ses_secret_access_key: SecretStr | None = Field(default=None, validate_default=True)
    ses_endpoint_url: str | None = None
    sendgrid_api_key: SecretStr | None = Field(default=None, validate_default=True)
    sendgrid_api_url: str | None = None
    mailgun_api_key: SecretStr | None = Field(default=None, validate_default=True)
    mailgun_api_url: str | None = None
    postmark_server_token: SecretStr | None = Field(default=None, validate_default=True)
    postmark_api_url: str | None = None
    from_address: str = "notifications@example.com"  # a display name allowed: Acme <a@acme.com>
    # The rest of the sender (CONTRACT section 11, docs/sender-and-dkim.md).
    from_name: str | None = None  # sets or replaces FROM_ADDRESS's display name
    reply_to: str | None = None  # one mailbox, a display name allowed
    return_path: str | None = None  # the envelope sender (MAIL FROM), else FROM_ADDRESS's
    # DKIM (CONTRACT section 17): all three, or none (messages go unsigned).
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = Field(default=None, validate_default=True)

    # Template and user services (CONTRACT sections 5 and 6).
    template_service_url: str = "http://127.0.0.1:8081"
    template_path: str = "/api/v1/templates/{template_code}"
    template_service_token: SecretStr | None = None
    template_fields: str = ""  # e.g. subject=data.name,html=data.content (see docs/deployment.md)
    template_default_language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    template_cache_seconds: float = Field(default=60.0, ge=0)
    user_service_url: str | None = None
    user_service_token: SecretStr | None = None
    user_service_path: str = "/api/v1/users/{user_id}"
    user_service_auth_header: str = Field(default="Authorization", pattern=HEADER_NAME)
    user_fields: str = ""  # e.g. email=data.contact.email,name=data.full_name
    http_timeout: float = Field(default=5.0, gt=0)
    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    max_rendered_bytes: int = Field(default=1_048_576, ge=1024)
    # CPU seconds one email's templates may render for (RELIABILITY rule 13).
    max_render_seconds: float = Field(default=0.5, gt=0, le=60)

    # Status callbacks (CONTRACT section 7).
    callback_url: str | None = None
    callback_secret: SecretStr | None = None
    callback_allowed_hosts: Annotated[list[str], NoDecode] = []
    callback_timeout: float = Field(default=10.0, gt=0)
    callback_max_age_hours: float = Field(default=48.0, gt=0)
    callback_lease_seconds: float = Field(default=60.0, gt=0)
    # Fitting the gateway's status endpoint (email_worker/callbacks/shape.py):
    # e.g. notification_id:notificationId,error:error_message,timestamp:delivered_at
    callback_field_names: str = ""
    callback_extra_fields: str = ""  # a JSON object merged into every body: {"channel": "email"}

    # Suppression list and one-click unsubscribe (CONTRACT section 15, docs/suppression.md).
    suppress_hard_bounces: bool = True  # a 5.1.x refusal at RCPT adds the address
    unsubscribe_url: str | None = None  # https://.../{token}: one-click headers on bulk mail
    # What an ``unsubscribe`` entry stops: all mail (the contract), or bulk mail only.
    unsubscribe_scope: str = Field(default="all", pattern="^(all|bulk)$")
    # Bounce and complaint webhooks (CONTRACT section 15, docs/webhooks.md): each endpoint is
    # off (404) while its setting is unset.
    ses_sns_cert_file: Path | None = None  # PEM certificate(s) SNS signs with, never fetched
    sendgrid_webhook_public_key: str | None = None  # base64 DER, as SendGrid shows it
    mailgun_webhook_signing_key: SecretStr | None = None
    postmark_webhook_username: str | None = None
    postmark_webhook_password: SecretStr | None = Field(default=None, validate_default=True)
    dsn_webhook_token: SecretStr | None = None

    # Operations.
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    beat_interval_seconds: float = Field(default=10.0, gt=0)

    # Status API and metrics.
    status_api_token: SecretStr | None = None  # when set, /api/ needs "Bearer <token>"
    status_api_open: bool = False  # no token: the API is off (404) unless this opens it
    status_api_expose_content: bool = False  # recipient, subject and bodies in the status API
    smtp_probe_interval_seconds: float = Field(default=10.0, gt=0)  # readiness TCP check
    metrics_cache_seconds: float = Field(default=5.0, ge=0)  # outbox and queue gauges

    # SRE tooling: where `dlq export` records what it exported (checked by `dlq purge`).
    dlq_state_dir: Path = Field(default_factory=default_state_dir)

    # Tracing (CONTRACT section 18): standard OTEL_* names, no prefix (email_worker/config/otel.py).
    # On only when an endpoint is set; the SDK reads its other standard variables itself.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=otel.standard("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias=otel.standard("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    otel_exporter_otlp_protocol: str | None = Field(
        default=None, validation_alias=otel.standard("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    otel_exporter_otlp_traces_protocol: str | None = Field(
        default=None, validation_alias=otel.standard("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    )
    otel_service_name: str | None = Field(
        default=None, validation_alias=otel.standard("OTEL_SERVICE_NAME")
    )
    otel_sdk_disabled: bool = Field(
        default=False, validation_alias=otel.standard("OTEL_SDK_DISABLED")
    )

    @field_validator("routing_keys", "callback_allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return split_list(value)

    @field_validator("template_path", "user_service_path", "template_fields", "user_fields")
    @classmethod
    def _service_shape(cls, value: str, info: ValidationInfo) -> str:
        SERVICE_SHAPE_CHECKS[str(info.field_name)](value)  # raises ValueError naming the fault
        return value

    @field_validator("queue_arguments", mode="before")
    @classmethod
    def _strict_arguments(cls, value: object) -> object:
        return check_queue_arguments(value)

    @field_validator("domain_rate_limits")
    @classmethod
    def _domain_rate_limits(cls, value: str) -> str:
        parse_domain_limits(value)  # raises ValueError naming the bad item
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return check_url_template(value) if value else None

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsubscribe_url(cls, value: str | None) -> str | None:
        return check_unsubscribe_url(value) if value else None

    @field_validator("ses_sns_cert_file")
    @classmethod
    def _sns_certificates(cls, value: Path | None) -> Path | None:
        return check_sns_certificates(value) if value else None

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _sendgrid_key(cls, value: str | None) -> str | None:
        return check_sendgrid_key(value) if value and value.strip() else None

    @field_validator("mailgun_webhook_signing_key", "dsn_webhook_token")
    @classmethod
    def _unset_when_empty(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("postmark_webhook_password")
    @classmethod
    def _postmark_pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        given = value is not None and bool(value.get_secret_value())
        if given != bool(info.data.get("postmark_webhook_username")):
            raise ValueError(f"set it together with {PREFIX}POSTMARK_WEBHOOK_USERNAME, or neither")
        return value if given else None

    @field_validator("relays")
    @classmethod
    def _relay_urls(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # Raises ValueError naming the relay by position, never echoing a credential.
        check_implemented(parse_relays(value.get_secret_value()))
        return value

    @field_validator(*PROVIDER_CREDENTIALS)
    @classmethod
    def _provider_credentials(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        given = value if value is not None and value.get_secret_value().strip() else None
        relays = info.data.get("relays")
        if given is None and relays is not None and not info.data.get("sandbox"):
            needed_by = needing(str(info.field_name), parse_relays(relays.get_secret_value()))
            if needed_by:
                raise ValueError(f"required by relay {needed_by[0]} of {PREFIX}RELAYS")
        return given

    @field_validator(*PROVIDER_URLS)
    @classmethod
    def _provider_urls(cls, value: str | None) -> str | None:
        return check_api_url(value) if value and value.strip() else None

    @field_validator("callback_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # unset or empty: callbacks go unsigned
        signing_key(value.get_secret_value())  # raises ValueError, never echoing the secret
        return value

    @field_validator("callback_field_names")
    @classmethod
    def _callback_field_names(cls, value: str) -> str:
        parse_field_names(value)
        return value

    @field_validator("callback_extra_fields")
    @classmethod
    def _callback_extra_fields(cls, value: str, info: ValidationInfo) -> str:
        names = info.data.get("callback_field_names") or ""  # absent when itself refused
        parse_extra_fields(value, parse_field_names(names))
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        return split_list(value)

    @field_validator("retry_delays")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("needs one or more positive delays in seconds, e.g. 5,30,120")
        return value

    @field_validator(
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "otel_exporter_otlp_protocol",
        "otel_exporter_otlp_traces_protocol",
        "otel_service_name",
        mode="before",
    )
    @classmethod
    def _otel_unset_when_empty(cls, value: object) -> object:
        return otel.unset_when_empty(value)

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        return otel.check_endpoint(value)

    @field_validator("otel_exporter_otlp_protocol", "otel_exporter_otlp_traces_protocol")
    @classmethod
    def _otlp_protocol(cls, value: str | None) -> str | None:
        return otel.check_protocol(value)

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, value: str) -> str:
        parse_mailbox(value)  # raises ValueError naming the fault
        return value.strip()

    @field_validator("from_name", "reply_to", "return_path", "dkim_domain", "dkim_selector")
    @classmethod
    def _sender_values(cls, value: str | None, info: ValidationInfo) -> str | None:
        text = (value or "").strip()
        if not text:
            return None  # unset or empty: not used
        SENDER_CHECKS[str(info.field_name)](text)  # raises ValueError naming the fault
        return text

    @field_validator("dkim_private_key_file")
    @classmethod
    def _dkim_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        names = [name for name in ("dkim_domain", "dkim_selector") if info.data.get(name)]
        if value is None and names:
            raise ValueError(f"required with {PREFIX}{names[0].upper()}")
        if value is not None and len(names) < 2:
            raise ValueError(f"needs {PREFIX}DKIM_DOMAIN and {PREFIX}DKIM_SELECTOR too")
        if value is not None:
            load_signing_key(value)  # unreadable, encrypted, RSA under 2048 bits: ValueError
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileSecretsSource(settings_cls))

    @property
    def broker_for_celery(self) -> str:
        """Celery's broker: ``CELERY_BROKER_URL`` when set, else ``AMQP_URL``."""
        return (self.celery_broker_url or self.amqp_url).get_secret_value()

    def relay_specs(self) -> tuple[RelaySpec, ...]:
        """The relays: ``RELAYS`` when set, else the one relay of the ``SMTP_*`` settings."""
        if self.relays is not None:
            return parse_relays(self.relays.get_secret_value())
        password = self.smtp_password.get_secret_value() if self.smtp_password else None
        security = str(self.smtp_security)
        return (smtp_spec(self.smtp_host, self.smtp_port, security, self.smtp_username, password),)

    def template_field_paths(self) -> dict[str, tuple[str, ...]]:
        return parse_field_paths(self.template_fields, TEMPLATE_FIELD_NAMES)

    def user_field_paths(self) -> dict[str, tuple[str, ...]]:
        return parse_field_paths(self.user_fields, USER_FIELD_NAMES)

    def callback_shape(self) -> CallbackShape:
        """``CALLBACK_FIELD_NAMES`` and ``CALLBACK_EXTRA_FIELDS``, parsed (checked at start-up)."""
        renames = parse_field_names(self.callback_field_names)
        return CallbackShape(renames, parse_extra_fields(self.callback_extra_fields, renames))

    def sender(self) -> Mailbox:
        """The From mailbox: ``FROM_ADDRESS``'s address, named by ``FROM_NAME`` or else by
        ``FROM_ADDRESS``'s display name (checked at start-up)."""
        name, address = parse_mailbox(self.from_address)
        return Mailbox(address, self.from_name or name)

    def reply_to_mailbox(self) -> Mailbox | None:
        """``REPLY_TO`` as a mailbox, None when unset."""
        if self.reply_to is None:
            return None
        name, address = parse_mailbox(self.reply_to)
        return Mailbox(address, name)

    def retry_queue_name(self, delay: float) -> str:
        return f"{self.retry_queue_prefix}.{int(delay * 1000)}ms"

    @property
    def otlp_traces_url(self) -> str | None:
        """Where spans are exported; None when tracing is off (no endpoint, or
        ``OTEL_SDK_DISABLED=true``): then no SDK object is built at all."""
        if self.otel_sdk_disabled:
            return None
        return otel.traces_url(
            self.otel_exporter_otlp_endpoint, self.otel_exporter_otlp_traces_endpoint
        )

    @property
    def lane_queue(self) -> str | None:
        """The bulk lane's name (``PRIORITY_LANE_QUEUE``, else ``<EMAIL_QUEUE>.bulk``); None
        when it is set empty (no lane)."""
        if self.priority_lane_queue is None:
            return f"{self.email_queue}.bulk"
        return self.priority_lane_queue.strip() or None

    @property
    def lane_threshold(self) -> int:
        """``PRIORITY_LANE_THRESHOLD``, else half of ``PREFETCH`` (at least 1)."""
        return self.priority_lane_threshold or max(1, self.prefetch // 2)

    def deprecations(self) -> list[str]:
        """One message per setting that is still accepted but ignored (logged at start-up)."""
        found = []
        if self.db_prepared_statements is not None:
            found.append(
                f"{PREFIX}DB_PREPARED_STATEMENTS is deprecated and ignored: the ledger's "
                "statements are no longer prepared on the server; remove the setting"
            )
        return found
