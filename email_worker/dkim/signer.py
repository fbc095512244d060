"""The ``DKIM-Signature`` header (RFC 6376; Ed25519 per RFC 8463) of a message as it goes out.

``DkimSigner.sign`` takes the final message bytes (what ``render.mime.build_message`` wrote,
after the SMTPUTF8 decision) and returns them with the signature header prepended; nothing else
changes. Canonicalisation is relaxed/relaxed. Signed: ``From``, ``Reply-To``, ``To``,
``Subject``, ``Date``, ``Message-ID``, ``MIME-Version``, ``Content-Type``, ``List-Unsubscribe``
and ``List-Unsubscribe-Post``, each when present, and ``From`` once more (RFC 6376 section
8.15: a second ``From`` added on the way then breaks the signature instead of being shown).

The header is folded at 78 columns between tags, between the names of ``h=`` and inside
``b=``, where RFC 6376 allows folding whitespace; ``b=`` starts a line of its own, so the
hashed header is byte for byte the sent one without the signature's value.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence

from email_worker.dkim.canonical import Field, relaxed_body, relaxed_header, split_message
from email_worker.dkim.keys import SigningKey

SIGNED_HEADERS = (
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
_NAME = "DKIM-Signature"
_LINE = 78
_SIGNATURE_CHUNK = 72
FOLD = "\r\n "  # CRLF and a space: folding whitespace


class DkimSigner:
    """Signs for ``domain`` (``d=``) with the key published under ``selector`` (``s=``).
    Thread-safe: it keeps no state between messages."""

    def __init__(
        self,
        domain: str,
        selector: str,
        key: SigningKey,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._domain, self._selector, self._key, self._clock = domain, selector, key, clock

    def sign(self, message: bytes) -> bytes:
        """``message`` with a ``DKIM-Signature`` header first. Raises ``ValueError`` for bytes
        that are no CRLF message (``canonical.split_message``)."""
        fields, body = split_message(message)
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
        present = {name.strip().lower().decode("ascii", "replace") for name, _ in fields}
        names = [name for name in SIGNED_HEADERS if name in present] + ["from"]
        value = self._value_before_signature(names, body_hash)
        # The signature header is hashed last, without its trailing CRLF (section 3.7).
        hashed = _selected(fields, names) + relaxed_header(_NAME.encode(), value.encode())[:-2]
        signature = base64.b64encode(self._key.sign(hashlib.sha256(hashed).digest())).decode()
        step = _SIGNATURE_CHUNK
        chunks = [signature[i : i + step] for i in range(0, len(signature), step)]
        return f"{_NAME}:{value}{FOLD.join(chunks)}\r\n".encode("ascii") + message

    def _value_before_signature(self, names: Sequence[str], body_hash: str) -> str:
        """The header's value up to ``b=`` (included), folded: exactly what is hashed."""
        signed = [f"{name}:" for name in names[:-1]] + [f"{names[-1]};"]
        # (gap, word): a line may break at a gap; "" marks a break allowed without a space
        # (after a colon of h=, where RFC 6376 allows folding whitespace).
        words = [
            (" ", f"a={self._key.algorithm};"),
            (" ", "c=relaxed/relaxed;"),
            (" ", f"d={self._domain};"),
            (" ", f"s={self._selector};"),
            (" ", f"t={int(self._clock())};"),
            (" ", f"h={signed[0]}"),
            *(("", word) for word in signed[1:]),
            (" ", f"bh={body_hash};"),
        ]
        lines, current = [], f"{_NAME}: v=1;"
        for gap, word in words:
            if len(current) + len(gap) + len(word) > _LINE:
                lines.append(current)
                current = word  # FOLD gives the line its leading space
            else:
                current += gap + word
        lines += [current, "b="]
        return FOLD.join(lines)[len(_NAME) + 1 :]


def _selected(fields: list[Field], names: Sequence[str]) -> bytes:
    """The canonical fields that ``h=`` names, in its order; each name takes the last
    instance not taken yet (RFC 6376 section 5.4.2), a name with none left takes nothing."""
    instances: dict[str, list[bytes]] = {}
    for name, value in fields:
        key = name.strip().lower().decode("ascii", "replace")
        instances.setdefault(key, []).append(relaxed_header(name, value))
    return b"".join(instances[name].pop() for name in names if instances.get(name))
