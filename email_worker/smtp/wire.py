"""What goes on the SMTP wire and what a reply means, as pure functions for ``mailer.py``.

Guarantees: envelope mailboxes are ``<local@domain>``; the DATA body is dot-stuffed and ends with
the final dot; a reply is turned into success or one ``schemas.failures`` error by its code and
the phase it answered, and failure details carry the code, the enhanced code and the phase,
never the relay's text (it echoes addresses).
"""

from __future__ import annotations

import functools
import re
import smtplib
import ssl

from email_worker.render.mime import is_bare_address
from schemas.failures import PermanentFailure, Reason, SystemicFailure, TransientFailure

_AUTH_CODES = frozenset({530, 534, 535})
_ENHANCED = re.compile(rb"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# A whitespace-delimited word holding an "@", matched only from the word's start (the
# lookbehind) and never given back (``*+``): ``\S+@\S+`` retried from every position of a long
# word without "@" was quadratic in a relay's reply (RELIABILITY rule 19).
_ADDRESS = re.compile(r"(?<!\S)[^\s@]*+@\S*")


@functools.lru_cache(maxsize=256)
def mailbox(address: str) -> str:
    """``<local@domain>`` for MAIL FROM / RCPT TO. A display name (``Acme <a@b>``) is parsed
    once per distinct value: the sender is nearly always the same one."""
    if is_bare_address(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def dot_stuffed(payload: bytes) -> bytes:
    """The DATA body: leading dots doubled, CRLF-terminated, then the final ``.``."""
    body = re.sub(rb"(?m)^\.", b"..", payload)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def reply_status(code: int, reply: bytes, phase: str) -> str:
    """``"451 4.3.0 at RCPT"``: the code, the enhanced code if any, the phase; no text."""
    enhanced = _ENHANCED.match(reply)
    middle = f" {enhanced.group(1).decode()}" if enhanced else ""
    return f"{code}{middle} at {phase}"


def classify(code: int, reply: bytes, phase: str, expect: int | None = None) -> None:
    """Return when ``code`` is success at ``phase`` (``expect``, else any 2xx); otherwise
    raise the failure it means. Anything not 5xx or an auth code (4xx, or a reply that makes
    no sense at this phase) is transient."""
    if code == expect or (expect is None and 200 <= code < 300):
        return
    detail = reply_status(code, reply, phase)
    if code in _AUTH_CODES:
        raise SystemicFailure(Reason.SMTP_AUTH_FAILED, detail)
    if 500 <= code < 600:
        reason = Reason.RECIPIENT_REJECTED if phase == "RCPT" else Reason.MESSAGE_REJECTED
        raise PermanentFailure(reason, detail)
    raise TransientFailure(Reason.SMTP_TRANSIENT, detail)


def accepted_reply(code: int, reply: bytes) -> str:
    """The final reply as stored in the ledger: addresses masked, one line, at most 200 chars."""
    text = _ADDRESS.sub("[address]", reply.decode("utf-8", "replace").replace("\n", " "))
    return f"{code} {text}"[:200]


def tls_failure(error: ssl.SSLError) -> SystemicFailure:
    if isinstance(error, ssl.SSLCertVerificationError):
        return SystemicFailure(Reason.SMTP_TLS_FAILED, "certificate verification failed")
    return SystemicFailure(Reason.SMTP_TLS_FAILED, f"TLS handshake failed: {error.reason}")
