"""Route names, ``DOMAIN_RATE_LIMITS`` and the metric labels of routes (CONTRACT section 12).

A *route* is what one rate applies to, shared by every replica:

    relay             every relay together: ``RATE_LIMIT`` (or a throttle reported without a
                      relay's name: a mailer that is not the relay router)
    relay:<name>      one relay: its ``?rate=`` in ``RELAYS``, or a throttle it answered; the
                      relay router waits for it once it chose the relay (``relay_route``)
    domain:<domain>   one recipient domain: ``DOMAIN_RATE_LIMITS``, or a throttle about it

A ``ThrottledFailure`` names its route as the mailer saw it (``relay``, which the relay router
turns into ``relay:<name>``, or ``domain`` for an answer about the recipient); ``route_of``
turns it into a full route name. Domains are
lower-case ASCII (an internationalised domain arrives in its punycode form or not at all).
"""

from __future__ import annotations

import math
import threading

RELAY = "relay"
RELAY_PREFIX = "relay:"
DOMAIN_PREFIX = "domain:"
OTHER_DOMAINS = "domain:other"
# Label values a route may take beyond the configured ones: throttled domains past this many
# share ``domain:other``, so that a relay throttling every recipient domain in turn cannot
# grow the metrics without bound.
MAX_DOMAIN_LABELS = 50
_MAX_DOMAIN = 253
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def relay_route(name: str) -> str:
    """The route of one relay, by its name (``relays/urls.py``: never a credential)."""
    return RELAY_PREFIX + name


def domain_route(domain: str) -> str:
    return DOMAIN_PREFIX + domain.lower()


def route_of(failure_route: str, domain: str) -> str:
    """The full route of a throttling answer: ``domain`` (from the mailer) becomes
    ``domain:<the recipient's domain>``; anything else is already a route name."""
    if failure_route == "domain":
        return domain_route(domain)
    return failure_route or RELAY


def is_domain(text: str) -> bool:
    """A DNS name as a relay or a limit may name it: ASCII letters, digits, ``-`` and ``_``
    in labels of 1-63 characters, at least two labels, 253 characters at most."""
    if not text or len(text) > _MAX_DOMAIN or not text.isascii():
        return False
    labels = text.lower().split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63 and set(label) <= _LABEL_CHARS and label[0] != "-" and label[-1] != "-"
        for label in labels
    )


def parse_domain_limits(text: str) -> dict[str, float]:
    """``gmail.com=20,outlook.com=10`` into ``{"gmail.com": 20.0, "outlook.com": 10.0}``.

    Whitespace around items is ignored and domains are lower-cased; an empty text is no limit.
    Raises ``ValueError`` naming the bad item: no ``=``, not a domain, a rate that is not a
    finite number above 0, or a domain given twice."""
    limits: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        domain, sep, rate_text = item.partition("=")
        domain = domain.strip().lower().rstrip(".")
        if not sep or not is_domain(domain):
            raise ValueError(f"{item[:80]!r} is not domain=rate, e.g. gmail.com=20")
        try:
            rate = float(rate_text.strip())
        except ValueError:
            rate = math.nan
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"{item[:80]!r}: the rate must be a number of emails per second > 0")
        if domain in limits:
            raise ValueError(f"{domain!r} is given twice")
        limits[domain] = rate
    return limits


class RouteLabels:
    """Label values for routes: every configured route and ``relay*`` route is itself; the
    first ``MAX_DOMAIN_LABELS`` other domain routes seen are themselves too, the rest
    ``domain:other``. Thread-safe."""

    def __init__(self, configured: set[str], limit: int = MAX_DOMAIN_LABELS) -> None:
        self._configured = frozenset(configured)
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, route: str) -> str:
        if route in self._configured or not route.startswith(DOMAIN_PREFIX):
            return route
        with self._lock:
            if route in self._seen:
                return route
            if len(self._seen) < self._limit:
                self._seen.add(route)
                return route
        return OTHER_DOMAINS
