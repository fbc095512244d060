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
from email_worker.recipients import USER_FIELD_NAMES
from schemas.inbound import LANGUAGE_PATTERN
from templates_client.fields import parse_field_paths
from templates_client.template import TEMPLATE_FIELD_NAMES


class Settings(BaseSettings):
    """Every knob of the worker, with defaults that run against the local services."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

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
    from_address: str = "notifications@example.com"

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

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return check_url_template(value) if value else None

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

    @field_validator("from_address")
    @classmethod
    def _plain_from(cls, value: str) -> str:
        if any(ch in value for ch in '\r\n<>,;" ') or value.count("@") != 1:
            raise ValueError("must be one plain address like notifications@example.com")
        if not value.isascii():  # the Message-ID domain is taken from it
            raise ValueError("must be ASCII: give an internationalised domain in punycode")
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

    def template_field_paths(self) -> dict[str, tuple[str, ...]]:
        return parse_field_paths(self.template_fields, TEMPLATE_FIELD_NAMES)

    def user_field_paths(self) -> dict[str, tuple[str, ...]]:
        return parse_field_paths(self.user_fields, USER_FIELD_NAMES)

    def callback_shape(self) -> CallbackShape:
        """``CALLBACK_FIELD_NAMES`` and ``CALLBACK_EXTRA_FIELDS``, parsed (checked at start-up)."""
        renames = parse_field_names(self.callback_field_names)
        return CallbackShape(renames, parse_extra_fields(self.callback_extra_fields, renames))

    def retry_queue_name(self, delay: float) -> str:
        return f"{self.retry_queue_prefix}.{int(delay * 1000)}ms"

    def deprecations(self) -> list[str]:
        """One message per setting that is still accepted but ignored (logged at start-up)."""
        found = []
        if self.db_prepared_statements is not None:
            found.append(
                f"{PREFIX}DB_PREPARED_STATEMENTS is deprecated and ignored: the ledger's "
                "statements are no longer prepared on the server; remove the setting"
            )
        return found
