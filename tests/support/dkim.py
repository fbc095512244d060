"""DKIM keys and verification for tests: keys generated per run, and ``verify`` with ``dkimpy``
(the reference verifier) against the public key, its DNS look-up answered in memory."""

from __future__ import annotations

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from email_worker.dkim import SigningKey
from email_worker.dkim.keys import parse_signing_key

DOMAIN = "acme.test"
SELECTOR = "s2026"


def new_key(kind: str) -> SigningKey:
    """A fresh RSA-2048 (``"rsa"``) or Ed25519 (``"ed25519"``) key."""
    if kind == "rsa":
        return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return SigningKey(ed25519.Ed25519PrivateKey.generate())


def pem(key: SigningKey) -> bytes:
    """The key as the unencrypted PKCS#8 PEM that ``DKIM_PRIVATE_KEY_FILE`` holds."""
    data = key.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert parse_signing_key(data).algorithm == key.algorithm
    return data


class Verifier:
    """``dkimpy``'s verification of a message signed for ``domain``/``selector``, the TXT
    record served from ``key``; ``asked`` lists the names it looked up."""

    def __init__(self, key: SigningKey, domain: str = DOMAIN, selector: str = SELECTOR) -> None:
        self.record = key.dns_record().encode()
        self.name = f"{selector}._domainkey.{domain}.".encode()
        self.asked: list[bytes] = []

    def _txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.asked.append(name)
        return self.record if name == self.name else None

    def verify(self, message: bytes) -> bool:
        return bool(dkim.verify(message, dnsfunc=self._txt))
