"""Which URLs that arrive inside messages the worker may contact, and at which addresses
(RELIABILITY rule 15: no SSRF).

One parser, used where a URL is checked and where it is sent: ``parse_url`` reads it as httpx
does (hosts in IDNA 2008, through the ``idna`` package) and gives the ASCII host that is then
both compared with the allow-list and handed to the resolver, the TLS handshake and the
``Host`` header. The socket module would read a non-ASCII name with IDNA 2003 itself:
``straße.de`` would be checked as ``xn--strae-oqa.de`` and connected to as ``strasse.de``.

Two checks: ``host_allowed`` when the message arrives (the name is on the allow-list), and
``UrlPolicy.addresses`` when connecting: the name is checked again and every address it
resolves to must be public, judged after unwrapping mapped, NAT64, 6to4 and Teredo forms, unless
that exact address is listed. An allow-listed name that resolves to 127.0.0.1 (a wildcard DNS
service, a rebinding attack) reaches nothing; the sender connects only to the addresses checked,
never resolving the name a second time. The operator's own callback URL is trusted as it is.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: always internal
# The last label of a host that a resolver would read as a number (WHATWG "ends in a number").
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
# Anything that some parser could read as userinfo: an "@" before the path starts.
_AUTHORITY_AT = re.compile(r"^[^/?#]*//[^/?#]*@")


class Refused(Exception):
    """The URL may not be contacted. ``str()`` is a short stable name: ``InvalidURL``,
    ``HostNotAllowed``, ``NameNotResolved``, ``AddressNotAllowed``."""


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str  # "http" or "https"
    host: str  # ASCII: an A-label name (lower case, no trailing dot) or a bare IP literal
    port: int
    target: str  # path and query, as sent on the request line

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


# Every callback POST parses its URL, nearly always the same few: parsing is pure and its
# answer immutable, so each distinct URL is parsed once (a tenth of the callbacks process's
# CPU went to httpx's URL parser).
@functools.lru_cache(maxsize=1024)
def parse_url(url: str) -> ParsedUrl | None:
    """The URL as httpx reads it; None when it is malformed, not http(s), or when any parser
    might see userinfo in it (parsers disagree on odd authorities)."""
    if UNSAFE_URL_CHARS.search(url) or _AUTHORITY_AT.match(url):
        return None
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        target = parsed.raw_path.decode("ascii")
    except (httpx.InvalidURL, ValueError):  # ipaddress and idna raise plain ValueErrors
        return None
    if parsed.scheme not in ("http", "https") or parsed.userinfo or not host or "%" in host:
        return None
    if not 0 < port < 65536:  # httpx does not check the range
        return None
    return ParsedUrl(parsed.scheme, host, port, target)


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether a URL taken from a message may be requested.

    True only for an ``http``/``https`` URL without userinfo, control characters or
    backslashes whose host is on the allow-list: exactly (case-insensitive, trailing dot
    ignored; ports are not compared) or under a ``*.example.com`` entry (any subdomain, not
    the apex). Wildcards never match an IP literal: an address passes only when that same
    address is listed. Hosts a resolver would read as a legacy number (``2130706433``,
    ``0177.0.0.1``, ``127.1``) are always refused. The addresses a name resolves to are
    checked when connecting (``UrlPolicy``)."""
    parsed = parse_url(url)
    return parsed is not None and _host_listed(parsed.host, allowed_hosts)


def _host_listed(host: str, allowed_hosts: Sequence[str]) -> bool:
    literal = _ip_literal(host)
    if literal is None:
        return _name_listed(host, allowed_hosts)
    # Compared as addresses: listing 127.0.0.1 does not admit [::ffff:127.0.0.1].
    return literal in listed_ips(allowed_hosts)


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
    parsed = parse_url(f"http://{entry}/")
    return parsed.host if parsed is not None else entry


def listed_ips(allowed_hosts: Iterable[str]) -> set[IPAddress]:
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
    (100.64/10) and every other non-global address, judged after ``unwrap_ip``."""
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


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` (ASCII, as ``parse_url`` gives it) resolves to for TCP."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


class UrlPolicy:
    """Where the callback sender may connect. URLs on the origin of a ``trusted_urls`` entry
    (the operator's own callback URL) are used as they are; any other must be allow-listed
    and resolve only to public or exactly listed addresses."""

    def __init__(
        self,
        allowed_hosts: Sequence[str],
        trusted_urls: Iterable[str | None] = (),
        resolver: Resolver = resolve,
    ) -> None:
        self._allowed = tuple(allowed_hosts)
        self._listed = listed_ips(self._allowed)
        self._trusted = {p.origin for u in trusted_urls if u and (p := parse_url(u)) is not None}
        self._resolve = resolver

    def addresses(self, origin: tuple[str, str, int]) -> list[IPAddress]:
        """The addresses to connect to for ``origin`` (scheme, host and port, as ``parse_url``
        gives them), every one checked. Raises ``Refused``."""
        _, host, port = origin
        trusted = origin in self._trusted
        if not trusted and not _host_listed(host, self._allowed):
            raise Refused("HostNotAllowed")
        try:
            found = self._resolve(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise Refused("NameNotResolved") from exc
        if not found:
            raise Refused("NameNotResolved")
        if not trusted and any(is_internal_ip(a) and a not in self._listed for a in found):
            raise Refused("AddressNotAllowed")  # all or nothing: no racing a rebinding name
        return found
