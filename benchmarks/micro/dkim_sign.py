"""DKIM signing: ``email_worker.dkim.DkimSigner`` (our relaxed canonicalisation and header,
``cryptography``'s RSA and Ed25519) against ``dkimpy``, the maintained Python DKIM library, in
two ways: ``dkim.sign`` whole (its RSA is pure Python, ``dkim/crypto.py``: ``pow`` with the
CRT; its Ed25519 is PyNaCl's), and ``dkimpy``'s own canonicalisation and header hashing
(``rfc822_parse``, ``CanonicalizationPolicy``, ``hash_headers``) with ``cryptography``'s
signature, the best a maintained library gives with a fast signature.

Inputs: the digest email built by ``render.mime.build_message``, about 20 KB and 100 KB on the
wire, and with one item (about 4 KB), signed relaxed/relaxed over the same headers.
Equivalence: every side's output verifies with ``dkimpy`` against the public key. For scale,
each run also times building the same message, and the notes set the cost against the
worker's CPU per email in ``make bench``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from functools import partial

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy

from benchmarks.micro import samples
from benchmarks.micro.timing import Comparison, Side, format_us, measure_pair
from email_worker.dkim import DkimSigner, SigningKey
from email_worker.ports import OutgoingEmail
from email_worker.render.mime import build_message
from email_worker.render.textify import html_to_text

PART = "dkim"
DOMAIN, SELECTOR = "example.com", "bench"
SIZES = {"small": 2_000, "20 KB": 20_000, "100 KB": 100_000}  # small: one item, about 4 KB
# The worker's CPU per email in `make bench` (benchmarks/RESULTS.md, 2 processes, median run):
# in the `run` processes, and in every process of the machine (run, callbacks, Postgres,
# RabbitMQ, the sink). Signing adds to both.
RUN_CPU_US, MACHINE_CPU_US = 730.0, 1430.0
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


def digest_email(size: int) -> OutgoingEmail:
    """The digest email with as many items as it takes to pass ``size`` bytes on the wire."""
    items = 1
    while True:
        html = samples.digest_html(items)
        outgoing = samples.outgoing(html, html_to_text(html))
        if len(build_message(outgoing)) >= size:
            return outgoing
        items += max(1, items // 4)


def new_key(kind: str) -> SigningKey:
    if kind == "rsa":
        return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return SigningKey(ed25519.Ed25519PrivateKey.generate())


def dkimpy_whole(message: bytes, key: SigningKey, names: list[bytes]) -> bytes:
    """``dkim.sign`` (pure-Python RSA; Ed25519 through PyNaCl), given the key as it takes it:
    PEM for RSA, the base64 raw key for Ed25519."""
    if isinstance(key.key, rsa.RSAPrivateKey):
        private = key.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        private = base64.b64encode(
            key.key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
    algorithm = key.algorithm.encode()
    signature = dkim.sign(
        message,
        SELECTOR.encode(),
        DOMAIN.encode(),
        private,
        signature_algorithm=algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=names,
    )
    return bytes(signature) + message


def dkimpy_canonical(message: bytes, key: SigningKey, names: list[bytes]) -> bytes:
    """``dkimpy``'s parsing, canonicalisation and header hashing; ``cryptography`` signs."""
    headers, body = dkim.rfc822_parse(message)
    body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    tags = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode()),
        (b"c", b"relaxed/relaxed"),
        (b"d", DOMAIN.encode()),
        (b"s", SELECTOR.encode()),
        (b"t", str(int(time.time())).encode()),
        (b"h", b" : ".join(names)),  # spaces: dkimpy folds only at a space or mid-word
        (b"bh", body_hash),
    ]
    folded: bytes = dkim.fold(b"; ".join(b"=".join(tag) for tag in tags), namelen=15)
    value = folded + b";\r\n b="
    hasher = hashlib.sha256()
    canonical = _RELAXED.canonicalize_headers(headers)
    dkim.hash_headers(hasher, _RELAXED, canonical, names, (b"DKIM-Signature", b" " + value), {})
    signature = base64.b64encode(key.sign(hasher.digest()))
    return b"DKIM-Signature: " + value + signature + b"\r\n" + message


def _signed_names(ours: bytes) -> list[bytes]:
    """The ``h=`` list of our signature, so every side signs the same headers."""
    head = ours.split(b"\r\nFrom:")[0].replace(b"\r\n ", b" ")
    h_tag = head.split(b"h=")[1].split(b";")[0]
    return [name.strip() for name in h_tag.split(b":")]


def check(sides: dict[str, bytes], key: SigningKey) -> str:
    """How the signed messages are equivalent; ``AssertionError`` if one does not verify."""
    record = key.dns_record().encode()

    def txt(name: bytes, timeout: float = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    failed = [label for label, signed in sides.items() if not dkim.verify(signed, dnsfunc=txt)]
    assert failed == [], f"no valid signature from {failed}"
    return "every side's signature verifies with dkimpy against the public key"


def _scale_note(found: list[Comparison], building: dict[str, float]) -> str:
    """Our cost per email set against the worker's CPU per email in ``make bench``."""
    parts = []
    for case in dict.fromkeys(c.case for c in found):
        ours = min(c.ours.cpu_us for c in found if c.case == case)
        share = MACHINE_CPU_US / (MACHINE_CPU_US + ours)
        parts.append(
            f"{case}: {format_us(ours)} (building that message: {format_us(building[case])}; "
            f"signed throughput about {share:.0%} of unsigned)"
        )
    return (
        f"our signing per email against the worker's whole CPU per email in `make bench` "
        f"({format_us(MACHINE_CPU_US)} on the machine, {format_us(RUN_CPU_US)} in `run`; "
        f"benchmarks/RESULTS.md): " + "; ".join(parts)
    )


def run(rounds: int, scale: float = 1.0, sizes: dict[str, int] | None = None) -> list[Comparison]:
    """Ours against both ``dkimpy`` ways, for RSA-2048 and Ed25519 at each size."""
    found: list[Comparison] = []
    building: dict[str, float] = {}
    calls = max(1, int(60 * scale))
    for size_label, size in (sizes or SIZES).items():
        outgoing = digest_email(size)
        message = build_message(outgoing)
        build = Side("build_message", partial(build_message, outgoing))
        built = measure_pair(build, build, calls=calls, rounds=rounds)[0].cpu_us
        for kind in ("rsa", "ed25519"):
            key = new_key(kind)
            signer = DkimSigner(DOMAIN, SELECTOR, key)
            names = _signed_names(signer.sign(message))
            libraries: dict[str, Callable[[bytes, SigningKey, list[bytes]], bytes]] = {
                "dkimpy (dkim.sign)": dkimpy_whole,
                "dkimpy canonicalisation + cryptography": dkimpy_canonical,
            }
            outputs = {"ours": signer.sign(message)}
            outputs |= {label: way(message, key, names) for label, way in libraries.items()}
            equivalent = check(outputs, key)
            case = f"{key.algorithm}, {size_label} ({len(message) / 1000:.0f} KB)"
            building[case] = built
            for label, way in libraries.items():
                mine, theirs = measure_pair(
                    Side("DkimSigner.sign", partial(signer.sign, message)),
                    Side(label, partial(way, message, key, names)),
                    calls=calls,
                    rounds=rounds,
                )
                found.append(Comparison(PART, case, mine, theirs, equivalent))
    note = _scale_note(found, building)
    return [Comparison(c.part, c.case, c.ours, c.library, c.equivalent, (note,)) for c in found]
