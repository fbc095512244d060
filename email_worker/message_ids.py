"""Keyed identifiers: the ``Message-ID`` of an email and the log fingerprint of an address.

Both are HMAC-SHA256 under an operator secret. The ``Message-ID`` is derived from the
``request_id`` so that a re-send after an ambiguous delivery carries the same id (receivers and
relays can dedupe on it; RELIABILITY rule 10) while nobody outside can predict it. The address
fingerprint lets logs correlate one recipient across lines without ever holding the address
(RELIABILITY rule 18).
"""

from __future__ import annotations

import hashlib
import hmac
import re

_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _keyed(secret: bytes, data: str) -> str:
    if not secret:
        raise ValueError("a non-empty secret is required: an unkeyed id is guessable")
    return hmac.new(secret, data.encode("utf-8"), hashlib.sha256).hexdigest()


def message_id_for(request_id: str, secret: bytes, domain: str) -> str:
    """``<hex32@domain>``: the same for the same (request_id, secret, domain), unguessable
    without the secret. Raises ``ValueError`` for an empty secret or a malformed domain."""
    if not _DOMAIN.match(domain):
        raise ValueError("message-id domain must be a plain host name")
    return f"<{_keyed(secret, request_id)[:32]}@{domain.lower()}>"


def address_fingerprint(address: str, secret: bytes) -> tuple[str, str]:
    """(domain, keyed hash[:12]) of ``address`` for logs; case-insensitive, never reversible.
    Raises ``ValueError`` for an empty secret."""
    normalized = address.strip().lower()
    # Without an "@" the whole string would be the "domain": log nothing of it then.
    domain = normalized.rpartition("@")[2] if "@" in normalized else ""
    return domain, _keyed(secret, normalized)[:12]
