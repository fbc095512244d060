"""What an HTTP API provider's answer means here: one table for the four providers, so that
their answers are classified like SMTP replies (CONTRACT section 16).

    answer (status, or the provider's error code)   failure                           next relay?
    2xx                                              accepted
    429, a throttling code                           ThrottledFailure(route "relay",   no
                                                       Retry-After honoured)
    401, 403, an account or configuration code       SystemicFailure(SMTP_AUTH_FAILED) yes (pauses)
    404, 301/302/307/308 (redirects never followed)  SystemicFailure (the API URL or    yes (pauses)
                                                       the domain is wrong)
    408, 5xx, a maintenance code                     RelayUnavailable(SMTP_UNAVAILABLE) yes
    other 4xx with a recipient code                  PermanentFailure(RECIPIENT_REJECTED) no
    other 4xx                                        PermanentFailure(MESSAGE_REJECTED) no
    anything else (303, 1xx, an unknown 3xx)         AmbiguousDelivery(SMTP_UNKNOWN)   no

A 401/403 means the provider refused our credentials before looking at the message, and a 5xx
(or 408, the request not read in time) that it did not take the message: both may go to the
next relay at once (``relays.failover``). A 303 could follow a processed POST, so it is the one
answer that may mean the message was taken: ambiguous, never failed over.

Details carry the status, the provider and its error *code* (an SES error type, a Postmark
``ErrorCode``, a SendGrid error field path), never the provider's text: it may echo an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

from schemas.failures import (
    AmbiguousDelivery,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    WorkerFailure,
)

MAX_RETRY_AFTER = 3600.0  # a longer pause than an hour is taken as an hour
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,63}")
_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII without spaces
_DELTA = re.compile(r"[0-9]{1,10}")
_MOVED = frozenset({301, 302, 307, 308})


class CodeKind(StrEnum):
    """What a provider's own error code says, where its documentation says it."""

    RECIPIENT = "recipient"  # about this recipient (Postmark 406 inactive recipient)
    MESSAGE = "message"  # about this message or request (SES MessageRejected)
    ACCOUNT = "account"  # our account, credentials or sender configuration
    THROTTLE = "throttle"  # a rate or a quota
    UNAVAILABLE = "unavailable"  # the provider is down for maintenance


@dataclass(frozen=True)
class Refusal:
    """A non-2xx answer (or a 2xx one that reports an error): the provider's name, the status,
    its error code when it gave one and what that code means, and the advised pause."""

    provider: str
    status: int
    code: str | None = None
    kind: CodeKind | None = None
    retry_after: float | None = None

    @property
    def detail(self) -> str:
        """``"422 postmark 406"``: status, provider and a code that looks like one."""
        code = self.code if self.code and _CODE.fullmatch(self.code) else None
        return f"{self.status} {self.provider}" + (f" {code}" if code else "")


def failure(refusal: Refusal) -> WorkerFailure:
    """The failure ``refusal`` means (the table in the module docstring)."""
    status, kind, detail = refusal.status, refusal.kind, refusal.detail
    if status == 429 or kind is CodeKind.THROTTLE:
        return ThrottledFailure("relay", detail, retry_after=refusal.retry_after)
    if status in (401, 403, 404) or status in _MOVED or kind is CodeKind.ACCOUNT:
        return SystemicFailure(Reason.SMTP_AUTH_FAILED, detail)
    if status == 408 or 500 <= status <= 599 or kind is CodeKind.UNAVAILABLE:
        return RelayUnavailable(Reason.SMTP_UNAVAILABLE, detail)
    if 400 <= status <= 499:
        recipient = kind is CodeKind.RECIPIENT
        reason = Reason.RECIPIENT_REJECTED if recipient else Reason.MESSAGE_REJECTED
        return PermanentFailure(reason, detail)
    return AmbiguousDelivery(Reason.SMTP_UNKNOWN, detail)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to pause from a ``Retry-After`` value (delta-seconds or an HTTP date, RFC 9110
    section 10.2.3), capped at ``MAX_RETRY_AFTER``; None when absent or unreadable. Never
    raises."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value[:64])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER)


def reset_after(value: str | None, now: float) -> float | None:
    """Seconds until the Unix time ``value`` (a rate limit's reset), capped; None when absent
    or unreadable. Never raises."""
    if value is None or not _DELTA.fullmatch(value.strip()):
        return None
    return min(max(float(value.strip()) - now, 0.0), MAX_RETRY_AFTER)


def provider_id(value: object) -> str | None:
    """The provider's id of an accepted message when it looks like one (printable ASCII, no
    spaces, at most 200 characters), else None."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    return None


def accepted_reply(status: int, provider: str, message_id: str | None) -> str:
    """The reply recorded for an accepted message: ``"202 sendgrid id=<id>"``."""
    return f"{status} {provider}" + (f" id={message_id}" if message_id else "")
