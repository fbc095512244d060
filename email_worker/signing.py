"""Standard Webhooks signatures (https://www.standardwebhooks.com): what the callback dispatcher
puts in ``webhook-signature`` and what a receiver (or a test) checks.

The signed content is ``f"{webhook_id}.{timestamp}."`` followed by the exact body bytes; the
signature is ``v1,`` + base64(HMAC-SHA256(key, content)). A secret written ``whsec_<base64>``
(the spec's format) is base64-decoded into the key; any other secret is used as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

PREFIX = "whsec_"
VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature, timestamp or secret does not check out."""


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret``. Raises ``SignatureError`` for a malformed ``whsec_`` one."""
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
        except binascii.Error as exc:
            raise SignatureError("a whsec_ secret must be base64") from exc
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for this id, timestamp and exact body."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


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
