"""The failure taxonomy: stable reason codes and the errors that carry them.

Reason codes are part of the wire contract (the ``failure_reason`` dead-letter header and the
``error`` of a status callback), so they live here and never change name. Adapters *classify* a
failure by raising one of these errors; only ``email_worker.disposition.decide`` turns a failure
into a retry or a dead letter.

    WorkerFailure                 reason + short detail (never PII)
    ├── PermanentFailure          dead-letter at once
    └── TransientFailure          retry through a delay queue; counts an attempt
        ├── AmbiguousDelivery     connection lost after the final dot of DATA: ledger "unknown"
        ├── RelayUnavailable      the relay failed before it could accept the message: another
        │                         relay may take it at once (alone: an attempt, as any other)
        └── DeferredFailure       a dependency is unavailable; retry without counting an attempt
            ├── SystemicFailure   our own configuration or credentials are wrong: also pause
            └── ThrottledFailure  a route (the relay, a recipient domain) asked us to slow down:
                                  retry later without counting, never dead-lettered for it alone
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes. Permanent codes end in ``failed.queue``; the rest explain retries."""

    # Permanent (CONTRACT section 8).
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    TOO_LARGE = "too_large"
    WRONG_TYPE = "wrong_type"
    RECIPIENT_MISSING = "recipient_missing"
    RECIPIENT_INVALID = "recipient_invalid"
    RECIPIENT_UNKNOWN = "recipient_unknown"
    OPTED_OUT = "opted_out"
    TEMPLATE_NOT_FOUND = "template_not_found"
    TEMPLATE_ERROR = "template_error"
    TEMPLATE_INVALID = "template_invalid"  # a 2xx answer of the template service is no template
    UNSAFE_CONTENT = "unsafe_content"
    RECIPIENT_REJECTED = "recipient_rejected"
    MESSAGE_REJECTED = "message_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    DELIVERY_LIMIT = "delivery_limit"  # the broker's x-delivery-limit dead-lettered it
    # The worker's own crash-loop guard (MAX_DELIVERIES, counted in the ledger): any queue type.
    REDELIVERY_LIMIT = "redelivery_limit"
    # Version 2 (CONTRACT sections 14 and 15).
    EXPIRED = "expired"  # not sent before the message's expires_at
    CANCELLED = "cancelled"  # cancelled by an operator or the gateway before it was sent
    SUPPRESSED = "suppressed"  # the recipient is on the suppression list: nothing was sent
    # After a send: a provider's or a DSN's report (the status API and the `failed` callback).
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    # Transient: carried in "pending" callbacks and in the detail of retries_exhausted.
    SMTP_UNAVAILABLE = "smtp_unavailable"
    SMTP_TRANSIENT = "smtp_transient"
    SMTP_UNKNOWN = "smtp_unknown"
    SMTP_AUTH_FAILED = "smtp_auth_failed"
    SMTP_TLS_FAILED = "smtp_tls_failed"
    TEMPLATE_SERVICE_UNAVAILABLE = "template_service_unavailable"
    USER_SERVICE_UNAVAILABLE = "user_service_unavailable"
    # Systemic: the service refuses our credentials (401/403); consumption pauses.
    TEMPLATE_SERVICE_UNAUTHORIZED = "template_service_unauthorized"
    USER_SERVICE_UNAUTHORIZED = "user_service_unauthorized"
    DATABASE_UNAVAILABLE = "database_unavailable"
    LEASE_BUSY = "lease_busy"
    LEASE_LOST = "lease_lost"
    INTERNAL_ERROR = "internal_error"
    # Deferral (CONTRACT section 12): a throttling answer, or a token too far ahead.
    THROTTLED = "throttled"


MAX_DETAIL = 200


class WorkerFailure(Exception):
    """A classified failure. ``detail`` is short and must never hold an address or content."""

    # The relay that answered (its name: a URL without credentials, or the ``?name=`` it was
    # given), set by the relay router (email_worker/relays/); None when no relay was reached.
    relay: str | None = None

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail[:MAX_DETAIL]
        super().__init__(f"{reason}: {self.detail}" if self.detail else str(reason))


class PermanentFailure(WorkerFailure):
    """Retrying cannot help: the message goes to the dead-letter queue at once."""


class TransientFailure(WorkerFailure):
    """May succeed later: the message is retried after a delay and the attempt is counted."""


class AmbiguousDelivery(TransientFailure):
    """The relay may hold the message (lost after the final dot): recorded ``unknown``."""


class RelayUnavailable(TransientFailure):
    """The relay failed before it could have accepted the message: connection refused, reset
    or lost before the final dot of DATA left, a 421 greeting, EHLO refused. Nothing was
    accepted, so the relay router hands the message to the next healthy relay at once without
    spending an attempt. When no other relay can take it, it is an ordinary transient failure."""


class DeferredFailure(TransientFailure):
    """A dependency is unavailable (breaker open, lease held): retry without counting."""


class SystemicFailure(DeferredFailure):
    """Our configuration is wrong (SMTP 535, bad certificate, a service refusing our token with
    401/403): defer and pause consuming."""


class ThrottledFailure(DeferredFailure):
    """A route asked us to slow down (SMTP 421, 4.7.x, 454; HTTP 429), or its next token is
    further ahead than a thread may wait. ``route`` names it (``relay``, ``relay:<name>``,
    ``domain:<domain>``); ``retry_after`` is the pause it advised, in seconds, when it said.
    Spends no attempt, sends no ``pending`` callback and never dead-letters alone."""

    def __init__(self, route: str, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(Reason.THROTTLED, detail)
        self.route = route
        self.retry_after = retry_after
