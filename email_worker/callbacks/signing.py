"""Standard Webhooks signatures (https://www.standardwebhooks.com): what the callback dispatcher
puts in ``webhook-signature`` and what a receiver (or a test) checks.

The signed content is ``f"{webhook_id}.{timestamp}."`` followed by the exact body bytes; the
signature is ``v1,`` + base64(HMAC-SHA256(key, content)). The secret has the spec's format,
``whsec_`` + standard base64 of 24-64 random bytes, and the key is those bytes: exactly what the
reference ``standardwebhooks`` library derives from the same string, so a gateway using it
verifies our callbacks. A secret in any other form is refused (``SignatureError``), never
guessed at: the reference library silently drops characters outside the base64 alphabet, so a
plain or URL-safe secret would give the two sides different keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

PREFIX = "whsec_"
VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MIN_KEY_BYTES = 24  # the spec: "at least 24 bytes (192 bits, 512 maximum)"
MAX_KEY_BYTES = 64
# Standard base64, padding optional (the reference library pads for itself).
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
HOW_TO_CONVERT = (
    "give whsec_ followed by the base64 of 24-64 random bytes "
    '(echo "whsec_$(openssl rand -base64 32)"); an older plain secret keeps its signatures as '
    "whsec_ + its base64 (printf %s OLD_SECRET | base64), if it is at least 24 bytes long"
)


class SignatureError(ValueError):
    """The signature, timestamp or secret does not check out. Never carries the secret."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret. Raises ``SignatureError`` for any other
    form (a plain secret, URL-safe or malformed base64) or a key outside 24-64 bytes."""
    if not secret.startswith(PREFIX):
        raise SignatureError(f"not a Standard Webhooks secret: {HOW_TO_CONVERT}")
    encoded = secret.removeprefix(PREFIX)
    digits = encoded.rstrip("=")
    if not _BASE64.fullmatch(encoded) or len(digits) % 4 == 1:
        raise SignatureError(f"the part after whsec_ is not standard base64: {HOW_TO_CONVERT}")
    try:
        key = base64.b64decode(digits + "=" * (-len(digits) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - the pattern above admits only valid input
        raise SignatureError(f"the part after whsec_ is not base64: {HOW_TO_CONVERT}") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SignatureError(f"the key is {len(key)} bytes, not 24-64: {HOW_TO_CONVERT}")
    return key


def sign_with_key(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for this id, timestamp and exact body."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``sign_with_key`` with the key of ``secret`` (see ``signing_key``)."""
    return sign_with_key(signing_key(secret), webhook_id, timestamp, body)


def verify(
    secret: str,
    webhook_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check a received callback. ``signature_header`` may list several space-separated
    signatures (key rotation); one valid ``v1`` signature is enough. Raises ``SignatureError``
    when the timestamp is malformed or further than ``tolerance`` seconds from ``now``, or
    when no signature matches (compared in constant time)."""
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance window")
    expected = sign(secret, webhook_id, sent_at, body).encode()
    for candidate in signature_header.split():
        # Compare bytes: compare_digest refuses non-ASCII str, and a header is untrusted.
        if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
            return
    raise SignatureError("no matching signature")
