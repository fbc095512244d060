"""Bulk mail and the suppression list, as the pipeline applies them (CONTRACT sections 13, 15).

A message with priority below ``PRIORITY_HIGH`` is *bulk*. Two rules follow:

- **One-click unsubscribe** (RFC 8058): when ``UNSUBSCRIBE_URL`` is set, bulk mail carries
  ``List-Unsubscribe: <url>`` (the recipient's own token in the URL) and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The worker's header **replaces** a
  ``List-Unsubscribe`` the template gave: RFC 8058 wants exactly one HTTPS URI that a bare POST
  unsubscribes, and only the worker's URL is known to do that. High-priority mail carries no
  one-click header (the template's own ``List-Unsubscribe``, if any, passes unchanged, without
  ``List-Unsubscribe-Post``), and so does all mail while ``UNSUBSCRIBE_URL`` is unset.
- **An unsubscribe stops bulk mail only.** The recipient left the mailing (the header is only
  on bulk mail), not their password resets: an ``unsubscribe`` entry suppresses messages below
  ``PRIORITY_HIGH``. Every other reason (``hard_bounce``, ``complaint``, ``manual``) suppresses
  every message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from email_worker.ports import RenderedEmail, UnsubscribeLinks

ONE_CLICK = "List-Unsubscribe=One-Click"  # the List-Unsubscribe-Post value RFC 8058 fixes
DEFAULT_PRIORITY_HIGH = 5
# With UNSUBSCRIBE_SCOPE=bulk, these reasons stop bulk mail only (a newsletter unsubscribe
# keeps password resets flowing). The default, ``all``, is the contract's: a suppressed
# address gets nothing.
BULK_ONLY_REASONS = frozenset({"unsubscribe"})
# A token is up to ~440 characters: with this, "List-Unsubscribe: <url>" fits one 998-octet line.
MAX_URL_TEMPLATE = 400
# What a URL may hold inside "<...>" of a List-Unsubscribe header (RFC 3986 characters but
# the comma, which RFC 2369 readers may take for a separator).
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+;=%{}]+")


def check_unsubscribe_url(url: str) -> str:
    """``UNSUBSCRIBE_URL`` as given, or ``ValueError`` saying why: an https:// URL with a host,
    ``{token}`` exactly once in its path or query, no other brace, no space, comma or angle
    bracket, at most 400 characters."""
    if len(url) > MAX_URL_TEMPLATE or not _URL_CHARACTERS.fullmatch(url):
        raise ValueError(
            "must be at most 400 URL characters (no space, comma, quote or angle bracket)"
        )
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL with a host (RFC 8058)")
    if url.count("{token}") != 1 or "{token}" not in parts.path + "?" + parts.query:
        raise ValueError("must hold {token} exactly once, in the path or the query")
    if "{" in url.replace("{token}", "") or "}" in url.replace("{token}", ""):
        raise ValueError("{token} is the only placeholder")
    return url


@dataclass(frozen=True)
class BulkMail:
    """Where bulk mail ends (``priority_high``) and how its links are made (None: no
    one-click headers)."""

    priority_high: int = DEFAULT_PRIORITY_HIGH
    links: UnsubscribeLinks | None = None
    unsubscribe_stops_bulk_only: bool = False  # UNSUBSCRIBE_SCOPE=bulk

    def is_bulk(self, priority: int) -> bool:
        return priority < self.priority_high

    def suppresses(self, reason: str, priority: int) -> bool:
        """Whether an entry with ``reason`` stops a message of ``priority``."""
        if not self.unsubscribe_stops_bulk_only or reason not in BULK_ONLY_REASONS:
            return True
        return self.is_bulk(priority)

    def headers(self, content: RenderedEmail, address: str, priority: int) -> RenderedEmail:
        """``content`` with the one-click headers for ``address`` when the message is bulk and
        links are configured; otherwise unchanged."""
        if self.links is None or not self.is_bulk(priority):
            return content
        return replace(
            content,
            list_unsubscribe=f"<{self.links.url_for(address)}>",
            list_unsubscribe_post=ONE_CLICK,
        )
