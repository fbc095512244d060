"""Webhook authentication by shared secrets, every comparison in constant time.

- Mailgun: ``signature`` is the hex HMAC-SHA256, under the webhook signing key, of the
  ``timestamp`` and ``token`` values concatenated
  (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks).
- Postmark: HTTP basic authentication, the user name and password the operator put in the
  webhook's URL (https://postmarkapp.com/developer/webhooks/webhooks-overview); Postmark does
  not sign its webhooks.
- DSN pipe: ``Authorization: Bearer <DSN_WEBHOOK_TOKEN>``.

Secrets are compared as SHA-256 digests: ``hmac.compare_digest`` on the raw values returns
early on a length mismatch, which would tell a prober the secret's length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets (their lengths included)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def mailgun_signature_ok(key: str, timestamp: str, token: str, signature: str) -> bool:
    """Whether ``signature`` is Mailgun's HMAC of ``timestamp`` + ``token`` under ``key``."""
    expected = hmac.new(key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256)
    return same_secret(signature.lower(), expected.hexdigest())


def basic_auth_ok(authorization: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization: Basic ...`` header carries exactly these credentials. Both
    halves are always compared, so the time taken does not say which one was wrong."""
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    given_user, colon, given_password = decoded.partition(":")
    user_ok = same_secret(given_user, username)
    password_ok = same_secret(given_password, password)
    return scheme.lower() == "basic" and bool(colon) and user_ok and password_ok


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization: Bearer <token>`` header carries ``token``."""
    scheme, _, given = (authorization or "").partition(" ")
    matches = same_secret(given.strip(), token)
    return scheme.lower() == "bearer" and matches


def fresh(timestamp: str, now: float, *, past: float, future: float) -> bool:
    """Whether the decimal seconds ``timestamp`` lies within ``past`` seconds before ``now``
    and ``future`` seconds after it (clock skew)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    return now - past <= int(timestamp) <= now + future
