"""Settings: the only reader of the environment (prefix ``EMAIL_WORKER_``).

Secrets may come from files: ``EMAIL_WORKER_SMTP_PASSWORD_FILE=/run/secrets/smtp`` reads the
file's content (trailing newline stripped). A bad value raises ``pydantic.ValidationError``; the
CLI turns it into a start-up error that names the variable.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PREFIX = "EMAIL_WORKER_"
SECRET_FIELDS = (
    "status_api_token",
    "smtp_password",
    "user_service_token",
    "callback_secret",
    "message_id_secret",
    "amqp_url",
    "database_url",
    "celery_broker_url",
)


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``EMAIL_WORKER_<NAME>_FILE`` for the secret fields."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{PREFIX}{field_name.upper()}_FILE")
        if field_name not in SECRET_FIELDS or not path:
            return None, field_name, False
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n"), field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                found[key] = value
        return found


def _default_state_dir() -> Path:
    """``$XDG_STATE_HOME/email-worker``, else ``~/.local/state/email-worker``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "email-worker"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the worker, with defaults that run against the local services."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    # Connections.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    celery_broker_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Off behind a pooler in transaction mode (PgBouncer): see email_worker/prepared.py.
    db_prepared_statements: bool = True

    # Broker topology (CONTRACT section 2).
    exchange: str = "notifications.direct"
    email_queue: str = "email.queue"
    failed_queue: str = "failed.queue"
    failed_routing_key: str = "failed"
    routing_keys: Annotated[list[str], NoDecode] = ["email", "email.queue"]
    retry_queue_prefix: str = "email.retry"
    callback_queue: str = "email.callbacks"
    queue_type: str = Field(default="quorum", pattern="^(quorum|classic)$")
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
    template_cache_seconds: float = Field(default=60.0, ge=0)
    user_service_url: str | None = None
    user_service_token: SecretStr | None = None
    http_timeout: float = Field(default=5.0, gt=0)
    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    max_rendered_bytes: int = Field(default=1_048_576, ge=1024)

    # Status callbacks (CONTRACT section 7).
    callback_url: str | None = None
    callback_secret: SecretStr | None = None
    callback_allowed_hosts: Annotated[list[str], NoDecode] = []
    callback_timeout: float = Field(default=10.0, gt=0)
    callback_max_age_hours: float = Field(default=48.0, gt=0)
    callback_lease_seconds: float = Field(default=60.0, gt=0)

    # Operations.
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    beat_interval_seconds: float = Field(default=10.0, gt=0)

    # Status API and metrics.
    status_api_token: SecretStr | None = None  # when set, /api/ needs "Bearer <token>"
    status_api_expose_content: bool = False  # recipient, subject and bodies in the status API
    smtp_probe_interval_seconds: float = Field(default=10.0, gt=0)  # readiness TCP check
    metrics_cache_seconds: float = Field(default=5.0, ge=0)  # outbox and queue gauges

    # SRE tooling: where `dlq export` records what it exported (checked by `dlq purge`).
    dlq_state_dir: Path = Field(default_factory=_default_state_dir)

    @field_validator("routing_keys", "callback_allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        return _split(value)

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

    def retry_queue_name(self, delay: float) -> str:
        return f"{self.retry_queue_prefix}.{int(delay * 1000)}ms"
