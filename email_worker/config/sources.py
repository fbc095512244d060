"""How settings are read: the prefix, secrets from ``*_FILE`` files, the comma-separated lists,
the checks of values that the code using them would otherwise only refuse per message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from email_worker.recipients import USER_FIELD_NAMES, check_user_path
from templates_client.client import check_template_path
from templates_client.fields import parse_field_paths
from templates_client.template import TEMPLATE_FIELD_NAMES

PREFIX = "EMAIL_WORKER_"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # an HTTP field name (RFC 9110 token)
# TEMPLATE_PATH, USER_SERVICE_PATH, TEMPLATE_FIELDS and USER_FIELDS are checked at start-up by
# the code that will use them, so a typo stops start-up instead of failing every message.
SERVICE_SHAPE_CHECKS: dict[str, Callable[[str], object]] = {
    "template_path": check_template_path,
    "user_service_path": check_user_path,
    "template_fields": lambda text: parse_field_paths(text, TEMPLATE_FIELD_NAMES),
    "user_fields": lambda text: parse_field_paths(text, USER_FIELD_NAMES),
}
SECRET_FIELDS = (
    "status_api_token",
    "smtp_password",
    "relays",
    "user_service_token",
    "template_service_token",
    "callback_secret",
    "message_id_secret",
    "amqp_url",
    "database_url",
    "celery_broker_url",
    "redis_url",
    "mailgun_webhook_signing_key",
    "postmark_webhook_password",
    "dsn_webhook_token",
    "ses_access_key_id",
    "ses_secret_access_key",
    "sendgrid_api_key",
    "mailgun_api_key",
    "postmark_server_token",
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


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/email-worker``, else ``~/.local/state/email-worker``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "email-worker"


def check_queue_arguments(value: object) -> object:
    """``QUEUE_ARGUMENTS`` as given (a JSON object of ``x-`` arguments), or ``ValueError``.

    Floats are refused (AMQP clients encode them differently, and the broker compares types),
    and so is ``x-queue-type``: ``QUEUE_TYPE`` says that.
    """
    if value is None or isinstance(value, str | bytes):
        return value  # a JSON string from the environment: decoded, then checked again
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object, e.g. {"x-max-priority": 10}')
    for name, argument in value.items():
        if name == "x-queue-type":
            raise ValueError("x-queue-type is set by EMAIL_WORKER_QUEUE_TYPE, not here")
        if not isinstance(argument, str | int):  # bool is an int; floats and None are not
            raise ValueError(f"{name}: only strings, integers and booleans are supported")
    return value


def split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
