"""Unsubscribe tokens (RFC 8058 one-click): opaque, unguessable, and stateless.

A token is the recipient's address encrypted and authenticated with Fernet (AES-128-CBC and
HMAC-SHA256, the ``cryptography`` recipe) under a key kept in the database
(``worker_secrets``, like the Message-ID key): nobody without the key can read an address out
of it or make one that verifies, and a forged or altered token simply fails to decrypt (the
endpoint answers 404). Why not a random token stored per message: that would be one more
database write per bulk email and a table of addresses that grows for ever and must outlive
the ledger's retention, while a link in an old newsletter must still work. The address is
padded to a multiple of 32 bytes first, so a token's length does not tell the address's
length. Fernet's ``=`` padding is dropped from the URL and restored when reading.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken

KEY_NAME = "unsubscribe_token_key"  # the name of its row in worker_secrets
_BLOCK = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{40,600}")  # what Fernet's urlsafe base64 looks like


class UnsubscribeTokens:
    """Mints and reads tokens; thread-safe."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the unsubscribe key must be 32 bytes")
        self._fernet = Fernet(base64.urlsafe_b64encode(secret))

    def mint(self, address: str) -> str:
        """A token for ``address`` (URL-safe, about 140 characters for a typical address)."""
        raw = address.encode("utf-8")
        padded = raw + b"\0" * (-len(raw) % _BLOCK)
        return self._fernet.encrypt(padded).decode("ascii").rstrip("=")

    def read(self, token: str) -> str | None:
        """The address ``token`` was minted for, or None for anything this key did not mint
        (forged, altered, truncated, another deployment's)."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            padded = self._fernet.decrypt(token + "=" * (-len(token) % 4))
        except InvalidToken:
            return None
        try:
            return padded.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - only this key's own mint gets here
            return None


class LazyTokens:
    """``UnsubscribeTokens`` whose key is loaded on first use (from the database), so a
    process that starts while Postgres is down still starts: until the key loads, ``mint`` and
    ``read`` raise what ``load`` raised (``DeferredFailure``: the message is deferred, the
    endpoint answers 503)."""

    def __init__(self, load: Callable[[], bytes]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._tokens: UnsubscribeTokens | None = None

    def _get(self) -> UnsubscribeTokens:
        tokens = self._tokens
        if tokens is None:
            with self._lock:
                if self._tokens is None:
                    self._tokens = UnsubscribeTokens(self._load())
                tokens = self._tokens
        return tokens

    def mint(self, address: str) -> str:
        return self._get().mint(address)

    def read(self, token: str) -> str | None:
        return self._get().read(token)


class UnsubscribeLinks:
    """``UNSUBSCRIBE_URL`` with each recipient's token in place of ``{token}``: the pipeline's
    ``UnsubscribeLinks`` port."""

    def __init__(self, url_template: str, tokens: UnsubscribeTokens | LazyTokens) -> None:
        self._before, _, self._after = url_template.partition("{token}")
        self._tokens = tokens

    def url_for(self, address: str) -> str:
        return f"{self._before}{self._tokens.mint(address)}{self._after}"
