"""Public-key signatures of provider webhooks, with ``cryptography`` (its only home here).

- Amazon SNS: ``Signature`` is base64 of an RSA PKCS#1 v1.5 signature of the string to sign
  (``email_worker.reports.ses.string_to_sign``), SHA-1 for ``SignatureVersion`` 1 and SHA-256
  for 2 (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html). The
  certificate comes from the operator's file (``SES_SNS_CERT_FILE``), never from the message's
  ``SigningCertURL``: fetching a URL named by the request would let its sender choose the key
  (and make the worker a client of arbitrary URLs, RELIABILITY rule 15). The file may hold
  several PEM certificates (the current and the next, while SNS rotates): any one verifying is
  enough.
- SendGrid: the Signed Event Webhook's ``X-Twilio-Email-Event-Webhook-Signature`` is base64 of
  a DER ECDSA signature (P-256, SHA-256) of the ``X-Twilio-Email-Event-Webhook-Timestamp`` value
  followed by the raw body; the verification key is shown in SendGrid's settings as base64 of
  its DER SubjectPublicKeyInfo
  (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features;
  sendgrid-python wraps that base64 in PEM armour to load it).

Loaders raise ``ValueError`` (naming no secret) for a key or certificate they cannot use;
verifiers return False for any signature that does not verify, never raise.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

_SNS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_SIGNATURE = 4096  # characters of base64: far above any RSA-4096 or ECDSA signature


def _decode(signature: str) -> bytes | None:
    if len(signature) > MAX_SIGNATURE:
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None


class SnsCertificates:
    """The RSA keys of the SNS signing certificates the operator trusts."""

    def __init__(self, keys: list[rsa.RSAPublicKey]) -> None:
        if not keys:
            raise ValueError("no RSA certificate to verify SNS signatures with")
        self._keys = keys

    @classmethod
    def from_pem(cls, data: bytes) -> SnsCertificates:
        """Every certificate in ``data`` (PEM). Raises ``ValueError`` when there is none or
        one does not carry an RSA key."""
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValueError("not a PEM file of X.509 certificates") from exc
        keys = []
        for certificate in certificates:
            key = certificate.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError("an SNS signing certificate carries an RSA key")
            keys.append(key)
        return cls(keys)

    def verify(self, signed: bytes, signature: str, version: str) -> bool:
        """Whether ``signature`` (base64) signs ``signed`` under one of the certificates, with
        the hash ``version`` names ("1": SHA-1, "2": SHA-256; anything else: False)."""
        algorithm, raw = _SNS_HASHES.get(version), _decode(signature)
        if algorithm is None or not raw:
            return False
        for key in self._keys:
            try:
                key.verify(raw, signed, padding.PKCS1v15(), algorithm())
            except InvalidSignature:
                continue
            return True
        return False


class SendGridKey:
    """The Signed Event Webhook's verification key (ECDSA P-256)."""

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the SendGrid verification key is not a P-256 key")
        self._key = key

    @classmethod
    def from_text(cls, value: str) -> SendGridKey:
        """The key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo (PEM armour
        and whitespace around it are tolerated). Raises ``ValueError`` otherwise."""
        body = "".join(line for line in value.strip().splitlines() if not line.startswith("-----"))
        try:
            key = load_der_public_key(base64.b64decode("".join(body.split()), validate=True))
        except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError("not a base64 DER public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("the SendGrid verification key is not an elliptic-curve key")
        return cls(key)

    def verify(self, timestamp: str, body: bytes, signature: str) -> bool:
        """Whether ``signature`` (base64 DER ECDSA) signs ``timestamp`` + ``body``."""
        raw = _decode(signature)
        if not raw:
            return False
        try:
            self._key.verify(raw, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def check_sns_certificates(path: Path) -> Path:
    """``path`` when it is a readable PEM file of RSA certificates (``SES_SNS_CERT_FILE``);
    raises ``ValueError`` otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the certificate file ({type(exc).__name__})") from exc
    SnsCertificates.from_pem(data)
    return path


def check_sendgrid_key(value: str) -> str:
    """``value`` when it is a P-256 public key as SendGrid shows it; ``ValueError`` otherwise
    (the message never echoes the value)."""
    SendGridKey.from_text(value)
    return value
