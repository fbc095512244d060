"""``RELAYS``: the ordered relay URLs (CONTRACT section 16), parsed into ``RelaySpec`` values.

    smtp://[user:pass@]host[:port]            plain SMTP                  (port 25 when omitted)
    smtp+starttls://[user:pass@]host[:port]   STARTTLS, certificate verified            (587)
    smtps://[user:pass@]host[:port]           implicit TLS, certificate verified        (465)
    ses://REGION  sendgrid://  mailgun://DOMAIN  postmark://     HTTP API providers; their
                                              credentials come from their own settings

Each URL may end with ``?weight=N`` (0-9999), ``name=NAME`` and ``rate=R`` (the relay's own
limit in emails per second, all replicas together: the route ``relay:<name>``; an extension of
CONTRACT 16) (``postmark://`` also ``stream=ID``, its message stream), comma-separated in
priority order. Credentials are
percent-decoded; ``/ ? # @`` inside them must be percent-encoded, a comma may stay as it is (a
piece that does not start with a scheme belongs to the previous URL).

A relay's **name** is its URL without credentials or query (``smtp://relay.example.com:587``,
``ses://eu-west-1``, ``sendgrid://``) or the ``name=`` it was given. Names label metrics, logs
and the status API, so no error message and no name ever holds a credential: errors name the
relay by its position only, and ``RelaySpec`` keeps its credentials out of ``repr``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, unquote, urlsplit


class RelayKind(StrEnum):
    SMTP = "smtp"
    SMTP_STARTTLS = "smtp+starttls"
    SMTPS = "smtps"
    SES = "ses"
    SENDGRID = "sendgrid"
    MAILGUN = "mailgun"
    POSTMARK = "postmark"


SMTP_KINDS = frozenset({RelayKind.SMTP, RelayKind.SMTP_STARTTLS, RelayKind.SMTPS})
# The kinds this build can send through (email_worker/app/relays.py builds them; the HTTP API
# providers' transports are in email_worker/providers/).
IMPLEMENTED = frozenset(RelayKind)
DEFAULT_PORTS = {RelayKind.SMTP: 25, RelayKind.SMTP_STARTTLS: 587, RelayKind.SMTPS: 465}
SANDBOX_NAME = "sandbox://"
MAX_WEIGHT = 9999
MAX_RELAYS = 16
MAX_TEXT = 16_384

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,99}")
_WEIGHT = re.compile(r"[0-9]{1,4}")
_RATE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")  # plain decimals: no inf, nan or 1e9
_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class RelayUrlError(ValueError):
    """A relay URL that cannot be used; the message names the relay by position only."""


@dataclass(frozen=True)
class RelaySpec:
    """One relay as configured. ``host`` is the SMTP host, the SES region or the Mailgun
    domain ("" for SendGrid and Postmark); ``weight`` is None when none was given."""

    kind: RelayKind
    name: str
    host: str
    port: int | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    weight: int | None = None
    stream: str | None = None  # Postmark's message stream (``?stream=``); None: its default
    rate: float | None = None  # ``?rate=``: emails per second to this relay; None: no limit

    @property
    def smtp(self) -> bool:
        return self.kind in SMTP_KINDS


def parse_relays(text: str, *, max_length: int = MAX_TEXT) -> tuple[RelaySpec, ...]:
    """Every relay of ``RELAYS``, in order. Raises ``RelayUrlError`` (a ``ValueError``) for
    an empty list, a bad URL or two relays with the same name; never echoes a credential.
    Linear in ``text`` (tests/unit/test_linear_time.py), which is at most ``max_length``."""
    if len(text) > max_length:
        raise RelayUrlError(f"at most {max_length} characters")
    if any((ch.isspace() and ch != " ") or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise RelayUrlError("control characters or line breaks are not allowed")
    urls = split_urls(text)
    if not urls:
        raise RelayUrlError("no relay URL given")
    if len(urls) > MAX_RELAYS:
        raise RelayUrlError(f"at most {MAX_RELAYS} relays")
    specs = tuple(_parse_one(url, position) for position, url in enumerate(urls, start=1))
    names = [spec.name for spec in specs]
    for position, name in enumerate(names, start=1):
        if names.index(name) != position - 1:
            raise RelayUrlError(
                f"relay {position} has the same name as relay {names.index(name) + 1}:"
                " give one of them ?name="
            )
    return specs


def check_implemented(specs: tuple[RelaySpec, ...]) -> tuple[RelaySpec, ...]:
    """``specs`` when this build can send through every one, else ``RelayUrlError``."""
    for position, spec in enumerate(specs, start=1):
        if spec.kind not in IMPLEMENTED:
            raise RelayUrlError(f"relay {position}: {spec.kind}:// is not available yet")
    return specs


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated list, empty items dropped; a piece that does not start
    with ``scheme://`` continues the previous URL (a comma inside a password)."""
    urls: list[list[str]] = []  # each URL's pieces: joined once (no quadratic re-copying)
    for piece in text.split(","):
        if urls and piece.strip() and not _SCHEME.match(piece.strip()):
            urls[-1].append(piece)
        elif piece.strip():
            urls.append([piece.strip()])
    return [",".join(pieces).strip() for pieces in urls]


def smtp_spec(
    host: str, port: int, security: str, username: str | None, password: str | None
) -> RelaySpec:
    """The one relay of the ``SMTP_*`` settings (``security`` none, starttls or tls), named
    like a ``RELAYS`` URL."""
    kind = {"starttls": RelayKind.SMTP_STARTTLS, "tls": RelayKind.SMTPS}.get(
        security, RelayKind.SMTP
    )
    shown = f"[{host}]" if ":" in host else host
    return RelaySpec(kind, f"{kind}://{shown.lower()}:{port}", host, port, username, password)


def _parse_one(url: str, position: int) -> RelaySpec:
    where = f"relay {position}"
    scheme, _, _ = url.partition("://")
    try:
        kind = RelayKind(scheme.lower())
    except ValueError:
        known = ", ".join(f"{k}://" for k in RelayKind)
        raise RelayUrlError(f"{where}: unknown kind (one of {known})") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RelayUrlError(f"{where}: not a valid URL or port (1-65535)") from None
    if port == 0:
        raise RelayUrlError(f"{where}: the port must be from 1 to 65535")
    if parts.path or parts.fragment or url.endswith(("?", "#")):
        raise RelayUrlError(
            f"{where}: a relay URL has no path: percent-encode '/', '?', '#' and '@' in credentials"
        )
    username, password = _credentials(parts.username, parts.password, where)
    options = _options(parts.query, where)
    host = _host(kind, parts.hostname or "", port, username is not None, where)
    if kind in SMTP_KINDS:
        port = port or DEFAULT_PORTS[kind]
    shown = f"[{host}]" if ":" in host else host
    default_name = f"{kind}://{shown}" + (f":{port}" if port else "")
    name = options.get("name", default_name)
    if password and password in name:
        raise RelayUrlError(f"{where}: a relay's name may not hold its password")
    stream = _stream(kind, options, where)
    weight = _weight(options, where)
    rate = _rate(options, where)
    return RelaySpec(kind, name, host, port, username, password, weight, stream, rate)


def _credentials(
    user: str | None, password: str | None, where: str
) -> tuple[str | None, str | None]:
    if user is None and password is None:
        return None, None
    if not user or not password:
        raise RelayUrlError(f"{where}: credentials need both a user and a password")
    return unquote(user), unquote(password)


def _options(query: str, where: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=4)
    except ValueError:
        raise RelayUrlError(f"{where}: the query must be weight=N, name=NAME, rate=R") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in ("weight", "name", "stream", "rate") or key in options:
            raise RelayUrlError(
                f"{where}: the query may hold weight=N, name=NAME, stream=ID, rate=R, once each"
            )
        options[key] = value
    if "name" in options and not _NAME.fullmatch(options["name"]):
        raise RelayUrlError(
            f"{where}: name must be 1-100 of A-Z a-z 0-9 . _ : / + - (starting alphanumeric)"
        )
    return options


def _stream(kind: RelayKind, options: dict[str, str], where: str) -> str | None:
    if "stream" not in options:
        return None
    if kind is not RelayKind.POSTMARK:
        raise RelayUrlError(f"{where}: only postmark:// takes stream=")
    if not _STREAM.fullmatch(options["stream"]):
        raise RelayUrlError(f"{where}: stream must be 1-100 of A-Z a-z 0-9 _ - (a stream ID)")
    return options["stream"]


def _weight(options: dict[str, str], where: str) -> int | None:
    if "weight" not in options:
        return None
    if not _WEIGHT.fullmatch(options["weight"]):
        raise RelayUrlError(f"{where}: weight must be an integer from 0 to {MAX_WEIGHT}")
    return int(options["weight"])


def _rate(options: dict[str, str], where: str) -> float | None:
    if "rate" not in options:
        return None
    if not _RATE.fullmatch(options["rate"]) or float(options["rate"]) <= 0:
        raise RelayUrlError(f"{where}: rate must be emails per second above 0, e.g. rate=14")
    return float(options["rate"])


def _host(kind: RelayKind, host: str, port: int | None, credentials: bool, where: str) -> str:
    """The checked host (SMTP), region (SES) or domain (Mailgun); "" for the others."""
    if kind in SMTP_KINDS:
        if not _hostname(host):
            raise RelayUrlError(f"{where}: needs a host name or IP address (ASCII)")
        return host.lower()
    if credentials:
        raise RelayUrlError(
            f"{where}: {kind}:// takes its credentials from its own settings, not the URL"
        )
    if port is not None:
        raise RelayUrlError(f"{where}: {kind}:// takes no port (set its API URL setting)")
    if kind is RelayKind.SES:
        if not _REGION.fullmatch(host):
            raise RelayUrlError(f"{where}: ses:// needs an AWS region, e.g. ses://eu-west-1")
    elif kind is RelayKind.MAILGUN:
        if not _hostname(host) or _is_ip(host):
            raise RelayUrlError(f"{where}: mailgun:// needs the sending domain")
    elif host:
        raise RelayUrlError(f"{where}: {kind}:// takes no host")
    return host.lower()


def _hostname(host: str) -> bool:
    if not host or not host.isascii() or len(host) > 253:
        return False
    if _is_ip(host):
        return True
    return all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
