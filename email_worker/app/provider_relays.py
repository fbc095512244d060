"""The HTTP API providers' relays, built from ``Settings`` (CONTRACT section 16): each
``ses://``, ``sendgrid://``, ``mailgun://`` and ``postmark://`` entry of ``RELAYS`` becomes its
transport (``email_worker.providers``) with keep-alive connections of its own, and a readiness
probe (a TCP connect to the API's host, at most once per ``SMTP_PROBE_INTERVAL_SECONDS``).

A relay's HTTP client: ``SMTP_TIMEOUT`` bounds connecting, each write and each read (a relay
operation, whatever the relay speaks), ``SMTP_CONNECTIONS`` is the number of connections per
relay and ``run`` process. The settings refused a ``RELAYS`` entry whose credentials are unset,
so each is present here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from email_worker.config import Settings
from email_worker.ops.health import TcpProbe
from email_worker.providers.credentials import URL_SETTINGS, default_base_url
from email_worker.providers.exchange import ProviderHttp
from email_worker.providers.mailgun import MailgunTransport
from email_worker.providers.postmark import DEFAULT_STREAM, PostmarkTransport
from email_worker.providers.sendgrid import SendGridTransport
from email_worker.providers.ses import SesTransport
from email_worker.relays.router import RelayTransport
from email_worker.relays.urls import RelayKind, RelaySpec

if TYPE_CHECKING:  # app/relays.py imports this module
    from email_worker.app.relays import RelayContext

HTTP_KINDS = frozenset({RelayKind.SES, RelayKind.SENDGRID, RelayKind.MAILGUN, RelayKind.POSTMARK})


def base_url(spec: RelaySpec, settings: Settings) -> str:
    """The API base URL of ``spec``: its ``*_API_URL`` / ``SES_ENDPOINT_URL`` setting, else
    the provider's own."""
    override = getattr(settings, URL_SETTINGS[spec.kind])
    return str(override) if override else default_base_url(spec)


def http_transport(spec: RelaySpec, context: RelayContext) -> RelayTransport:
    """The transport of one HTTP API relay (the DKIM signer applies to the raw-MIME ones)."""
    settings = context.settings
    http = ProviderHttp(
        base_url(spec, settings),
        timeout=settings.smtp_timeout,
        max_connections=settings.smtp_connections,
    )
    secret = _secrets(settings)
    if spec.kind is RelayKind.SES:
        key_id, key = secret("ses_access_key_id"), secret("ses_secret_access_key")
        return SesTransport(spec.host, key_id, key, http, sign=context.sign)
    if spec.kind is RelayKind.SENDGRID:
        return SendGridTransport(secret("sendgrid_api_key"), http)
    if spec.kind is RelayKind.MAILGUN:
        return MailgunTransport(spec.host, secret("mailgun_api_key"), http, sign=context.sign)
    stream = spec.stream or DEFAULT_STREAM
    return PostmarkTransport(secret("postmark_server_token"), http, stream=stream)


def http_probe(spec: RelaySpec, settings: Settings) -> Callable[[], bool]:
    """Whether the API's host accepts a TCP connection on its port (443 for https)."""
    parts = urlsplit(base_url(spec, settings))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    probe = TcpProbe(
        parts.hostname or "",
        port,
        interval=settings.smtp_probe_interval_seconds,
        timeout=min(2.0, settings.smtp_timeout),
    )
    return probe.reachable


def _secrets(settings: Settings) -> Callable[[str], str]:
    def secret(field_name: str) -> str:
        value = getattr(settings, field_name)
        if value is None:  # the settings refuse this already (naming the setting)
            raise ValueError(f"EMAIL_WORKER_{field_name.upper()} is required by RELAYS")
        return str(value.get_secret_value())

    return secret
