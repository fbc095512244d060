"""Outbound HTTP for the worker (RELIABILITY rules 15 and 17): the hardened ``httpx.Client``,
size-capped JSON reading, the gateway envelope, one GET that classifies every failure into our
own errors, and the SSRF allow-list check for URLs that arrive inside messages.

Every failure of the network layer is mapped exactly once, in ``get_object``:

    404                                  PermanentFailure(not_found)   not a dependency failure
    other status, timeout, refused,      TransientFailure(reason)      counts against a breaker
    oversized or malformed answer
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from schemas.failures import PermanentFailure, Reason, TransientFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Keys a gateway puts around its payload; a dict made only of these and a dict "data" is an
# envelope, anything else is the bare object.
ENVELOPE_KEYS = frozenset({"success", "data", "message", "error", "meta", "status", "statusCode"})
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: always internal
# The last label of a host that a resolver would read as a number (WHATWG "ends in a number").
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class ResponseTooLarge(ValueError):
    """The answer is larger than the caller's cap; it was not read to the end."""


def make_http_client(timeout: float, *, max_connections: int = 20) -> httpx.Client:
    """A thread-safe keep-alive client that never follows redirects, ignores proxy and
    certificate settings from the environment (``trust_env=False``) and verifies TLS.

    ``timeout`` bounds connecting, each read, each write and waiting for a pooled connection;
    httpx has no total deadline, so callers also cap the body size (``read_json``)."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "email-worker", "Accept": "application/json"},
    )


def read_json(response: httpx.Response, max_bytes: int) -> object:
    """Decode the JSON body, reading at most ``max_bytes`` of it (a streamed response is read
    chunk by chunk and abandoned once over the cap). Raises ``ResponseTooLarge`` or, for a body
    that is not JSON, ``ValueError``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"declared {declared} bytes, cap {max_bytes}")
    try:
        body = response.content  # already read: a non-streaming request
    except httpx.ResponseNotRead:
        body = _read_capped(response, max_bytes)
    if len(body) > max_bytes:
        raise ResponseTooLarge(f"over {max_bytes} bytes")
    return json.loads(body)  # JSONDecodeError and UnicodeDecodeError are ValueErrors


def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def unwrap_envelope(obj: object) -> dict[str, Any]:
    """The payload object: ``data`` of a gateway envelope (``{"success": true, "data": {...}}``)
    or the bare object itself. Raises ``ValueError`` for a non-object or an envelope that
    reports ``"success": false``."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    data = obj.get("data")
    if isinstance(data, dict) and obj.keys() <= ENVELOPE_KEYS:
        if obj.get("success") is False:
            raise ValueError("envelope reports success=false")
        return data
    if obj.get("success") is False:
        raise ValueError("envelope reports success=false")
    return obj


def get_object(
    http: httpx.Client,
    url: str,
    *,
    reason: Reason,
    not_found: Reason,
    max_bytes: int,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """GET ``url`` and return the unwrapped JSON object of a 2xx answer.

    Raises ``PermanentFailure(not_found)`` on 404, else ``TransientFailure(reason)`` for every
    other status, a timeout, a connection failure, an oversized or a malformed body. Details
    name the cause only: never the URL (it may carry ids) nor any content."""
    try:
        with http.stream("GET", url, params=params, headers=headers) as response:
            status = response.status_code
            if status == 404:
                raise PermanentFailure(not_found, "404 from the service")
            if not 200 <= status < 300:
                raise TransientFailure(reason, _status_detail(status))
            return unwrap_envelope(read_json(response, max_bytes))
    except httpx.TimeoutException as exc:
        raise TransientFailure(reason, f"timeout ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise TransientFailure(reason, f"connection failed ({type(exc).__name__})") from exc
    except ResponseTooLarge as exc:
        raise TransientFailure(reason, f"answer too large: {exc}") from exc
    except ValueError as exc:
        raise TransientFailure(reason, f"malformed answer ({type(exc).__name__})") from exc


def _status_detail(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed (check the service URL)"
    if status in (401, 403, 405, 407):
        return f"HTTP {status}: likely a configuration problem (URL or credentials)"
    return f"HTTP {status}"


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether a URL taken from a message may be requested (RELIABILITY rule 15).

    True only for an ``http``/``https`` URL without userinfo, control characters or
    backslashes whose host is on the allow-list: exactly (case-insensitive, trailing dot
    ignored; ports are not compared) or under a ``*.example.com`` entry (any subdomain, not
    the apex). Wildcards never match an IP literal: an address passes only when that same
    address is listed, so an internal one (``is_internal_ip``, after unwrapping mapped, NAT64,
    6to4 forms) is refused unless the operator listed exactly it. Hosts a resolver would read
    as a legacy number (``2130706433``, ``0177.0.0.1``, ``127.1``) are always refused. Names
    are not resolved here: list only hosts you trust."""
    parsed = _parse(url)
    if parsed is None or parsed.scheme not in ("http", "https") or parsed.userinfo:
        return False
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host or "%" in host:
        return False
    literal = _ip_literal(host)
    if literal is None:
        return _name_listed(host, allowed_hosts)
    # Compared as addresses: listing 127.0.0.1 does not admit [::ffff:127.0.0.1].
    return literal in _listed_ips(allowed_hosts)


def _parse(url: str) -> httpx.URL | None:
    """The URL as httpx (the client that will send it) reads it; None when it is malformed or
    when any parser might see userinfo in it: parsers disagree on odd authorities."""
    if UNSAFE_URL_CHARS.search(url):
        return None
    try:
        if "@" in urlsplit(url).netloc:
            return None
        return httpx.URL(url)
    except (httpx.InvalidURL, ValueError):  # ipaddress and urllib raise plain ValueErrors
        return None


def _ip_literal(host: str) -> IPAddress | None:
    """The address of an IP-literal host, None for a name; raises nothing. A numeric host that
    is not a canonical dotted quad is mapped to the unspecified address so it is refused."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        return ipaddress.IPv4Address(0)  # legacy forms: never listed, always internal
    return None


def _name_listed(host: str, allowed_hosts: Sequence[str]) -> bool:
    for raw in allowed_hosts:
        entry = raw.strip().lower().rstrip(".")
        if entry.startswith("*.") and len(entry) > 2:
            suffix = "." + _normalise_name(entry[2:])
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif entry and "*" not in entry and host == _normalise_name(entry):
            return True
    return False


def _normalise_name(entry: str) -> str:
    try:
        return httpx.URL(f"http://{entry}/").raw_host.decode("ascii").rstrip(".")
    except (httpx.InvalidURL, UnicodeError):
        return entry


def _listed_ips(allowed_hosts: Sequence[str]) -> set[IPAddress]:
    listed: set[IPAddress] = set()
    for entry in allowed_hosts:
        try:
            listed.add(ipaddress.ip_address(entry.strip().strip("[]")))
        except ValueError:
            continue
    return listed


def unwrap_ip(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form carries (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4
    ``2002::/16``, IPv4-compatible ``::a.b.c.d``, Teredo client), else ``address`` itself.
    ``ipaddress`` treats several of these forms of internal addresses as global."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    value = int(address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if 1 < value <= 0xFFFFFFFF:  # IPv4-compatible (deprecated); :: and ::1 stay IPv6
        return ipaddress.IPv4Address(value)
    return address


def is_internal_ip(address: IPAddress) -> bool:
    """True for loopback, private, link-local, reserved, multicast, unspecified, shared
    (100.64/10) and every other non-global address, judged after ``unwrap_ip``. Use it also on
    the resolved peer address when connecting to a URL that came from a message."""
    if isinstance(address, ipaddress.IPv6Address) and address in LOCAL_NAT64:
        return True
    inner = unwrap_ip(address)
    return (
        not inner.is_global
        or inner.is_loopback
        or inner.is_private
        or inner.is_link_local
        or inner.is_reserved
        or inner.is_multicast
        or inner.is_unspecified
    )
