"""Outbound HTTP for the worker (RELIABILITY rules 15 and 17): the hardened ``httpx.Client``
and the SSRF allow-list check for URLs that arrive inside messages. Calling a service and
classifying its answer is ``templates_client.fetch``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: always internal
# The last label of a host that a resolver would read as a number (WHATWG "ends in a number").
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def make_http_client(timeout: float, *, max_connections: int = 20) -> httpx.Client:
    """A thread-safe keep-alive client that never follows redirects, ignores proxy and
    certificate settings from the environment (``trust_env=False``) and verifies TLS.

    ``timeout`` bounds connecting, each read, each write and waiting for a pooled connection;
    httpx has no total deadline, so callers also cap the body size
    (``templates_client.fetch.read_capped``)."""
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
