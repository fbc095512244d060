"""Which settings each HTTP API provider needs, its default API base URL, and the check of a
base URL that overrides it (``SES_ENDPOINT_URL``, ``SENDGRID_API_URL``, ``MAILGUN_API_URL``,
``POSTMARK_API_URL``). Pure: the settings use it at start-up, so a ``RELAYS`` entry whose
credentials are missing stops start-up naming the setting.

Default base URLs, from each provider's documentation:
- SES v2: ``https://email.{region}.amazonaws.com`` (the service's endpoint prefix ``email``;
  https://docs.aws.amazon.com/general/latest/gr/ses.html)
- SendGrid: ``https://api.sendgrid.com`` (``https://api.eu.sendgrid.com`` for EU regional
  subusers; https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send)
- Mailgun: ``https://api.mailgun.net`` (``https://api.eu.mailgun.net`` for EU domains;
  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages)
- Postmark: ``https://api.postmarkapp.com`` (https://postmarkapp.com/developer/api/overview)

An overriding URL must be ``https://``, or ``http://`` to a loopback host (a test's fake API:
credentials never cross a network in clear text); no user, query or fragment; a path prefix is
kept. Error messages never echo the value (it may be mistyped with a secret in it).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from email_worker.relays.urls import RelayKind, RelaySpec

# The secret settings each kind needs, by field name (EMAIL_WORKER_ + upper case).
CREDENTIALS: dict[RelayKind, tuple[str, ...]] = {
    RelayKind.SES: ("ses_access_key_id", "ses_secret_access_key"),
    RelayKind.SENDGRID: ("sendgrid_api_key",),
    RelayKind.MAILGUN: ("mailgun_api_key",),
    RelayKind.POSTMARK: ("postmark_server_token",),
}
# The setting that overrides each kind's base URL, by field name.
URL_SETTINGS: dict[RelayKind, str] = {
    RelayKind.SES: "ses_endpoint_url",
    RelayKind.SENDGRID: "sendgrid_api_url",
    RelayKind.MAILGUN: "mailgun_api_url",
    RelayKind.POSTMARK: "postmark_api_url",
}
_DEFAULTS = {
    RelayKind.SENDGRID: "https://api.sendgrid.com",
    RelayKind.MAILGUN: "https://api.mailgun.net",
    RelayKind.POSTMARK: "https://api.postmarkapp.com",
}


def default_base_url(spec: RelaySpec) -> str:
    """The provider's own API base URL for ``spec`` (SES: the region's endpoint)."""
    if spec.kind is RelayKind.SES:
        return f"https://email.{spec.host}.amazonaws.com"
    return _DEFAULTS[spec.kind]


def needing(field_name: str, specs: tuple[RelaySpec, ...]) -> list[int]:
    """The positions (from 1) of the relays of ``specs`` that need the setting ``field_name``."""
    return [
        position
        for position, spec in enumerate(specs, start=1)
        if field_name in CREDENTIALS.get(spec.kind, ())
    ]


def check_api_url(value: str) -> str:
    """``value`` without a trailing ``/``, or ``ValueError`` saying what is wrong (never
    echoing it)."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("may not hold a user or password (credentials have their own settings)")
    if parts.query or parts.fragment or value.strip().endswith(("?", "#")):
        raise ValueError("may not hold a query or fragment")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError("must be https:// (http:// only to a loopback address, for tests)")
    return value.strip().rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
