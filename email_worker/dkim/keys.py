"""The DKIM signing key: read from a PEM file once at start-up, checked, and its public half as
the DNS TXT record the receivers look up (RFC 6376 section 3.6.1, RFC 8463 for Ed25519).

Accepted: RSA of at least 2048 bits (``rsa-sha256``; RFC 8301 forbids signing with fewer than
1024 and receivers increasingly distrust 1024) and Ed25519 (``ed25519-sha256``), unencrypted
PEM in PKCS#8 (``BEGIN PRIVATE KEY``) or, for RSA, PKCS#1 (``BEGIN RSA PRIVATE KEY``). Anything
else raises ``ValueError`` saying what is wrong, never the key's content.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

MIN_RSA_BITS = 2048
_PKCS1 = padding.PKCS1v15()
_PREHASHED = utils.Prehashed(hashes.SHA256())


@dataclass(frozen=True)
class SigningKey:
    """A checked private key and the DKIM algorithm it signs with."""

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        """The ``a=`` tag: ``rsa-sha256`` or ``ed25519-sha256``."""
        return "rsa-sha256" if isinstance(self.key, rsa.RSAPrivateKey) else "ed25519-sha256"

    def sign(self, digest: bytes) -> bytes:
        """The signature of a SHA-256 ``digest`` of the signed header data: RSASSA-PKCS1-v1_5
        (RFC 6376 section 3.3.1), or Ed25519 over the digest itself (RFC 8463 section 3)."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, _PKCS1, _PREHASHED)
        return self.key.sign(digest)

    def dns_record(self) -> str:
        """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            kind = "rsa"
        else:
            data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            kind = "ed25519"
        return f"v=DKIM1; k={kind}; p={base64.b64encode(data).decode('ascii')}"


def load_signing_key(path: Path) -> SigningKey:
    """The key in the PEM file at ``path``. Raises ``ValueError`` when the file cannot be read,
    holds no unencrypted PEM private key, or holds a key of another type or an RSA key of
    fewer than 2048 bits."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the key file: {type(exc).__name__}") from None
    return parse_signing_key(data)


def parse_signing_key(data: bytes) -> SigningKey:
    """``load_signing_key`` for the file's bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "this key is encrypted"
        raise ValueError("the key is encrypted: give an unencrypted PEM key") from None
    except ValueError:  # its message may quote the data: not repeated
        raise ValueError("not a PEM private key (openssl genpkey writes one)") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey(key)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"a {type(key).__name__}: DKIM signs with RSA or Ed25519 only")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"an RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} required")
    return SigningKey(key)
