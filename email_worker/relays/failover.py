"""The failover decision table: which failure of one relay may hand the message to the next,
what each says about the relay's health, and how each is counted.

A message goes to another relay only when the first **cannot have accepted it**, so failover
never makes a duplicate (CONTRACT section 16, RELIABILITY rule 10):

    failure (from the relay's transport)            next relay?  relay's health   result
    RelayUnavailable (refused, reset or lost before    yes        failed           unavailable
      the final dot, 421 greeting, EHLO refused;
      HTTP 5xx or no connection before a reply)
    SystemicFailure (TLS refused, AUTH refused)        yes        failed           unavailable
    AmbiguousDelivery (lost after the final dot)       never      failed           unknown
    PermanentFailure (5xx at RCPT or DATA)             never      healthy          rejected
    ThrottledFailure (421/4.7.x, HTTP 429)             never      healthy          throttled
    TransientFailure (4xx at RCPT or DATA)             never      healthy          transient
    DeferredFailure (no pooled connection in time)     never      neutral          deferred
    PermanentFailure(UNSAFE_CONTENT) (never sent)      never      neutral          rejected

A 4xx at RCPT or DATA is the relay's answer about this message: it is retried through the
queues like any transient failure, not sent elsewhere at once. An ambiguous outcome rests the
relay (it lost a message) but the message itself never goes elsewhere: it is recorded
``unknown`` and re-sent later with the same Message-ID, as with one relay.
"""

from __future__ import annotations

from email_worker.pacing.routes import relay_route
from email_worker.relays.breaker import Health
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    WorkerFailure,
)

# Every value of the ``result`` label of ``email_worker_sends_total``.
RESULTS = ("sent", "unavailable", "unknown", "rejected", "throttled", "transient", "deferred")


def fails_over(failure: WorkerFailure) -> bool:
    """True when the relay cannot have accepted the message: another relay may take it now."""
    return isinstance(failure, RelayUnavailable | SystemicFailure)


def health(failure: WorkerFailure | None) -> Health:
    """What the outcome of one send says about the relay, for its breaker."""
    if failure is None:
        return Health.HEALTHY
    if fails_over(failure) or isinstance(failure, AmbiguousDelivery):
        return Health.FAILED
    if isinstance(failure, ThrottledFailure):
        return Health.HEALTHY  # it answered; the pacer slows it down
    if isinstance(failure, DeferredFailure):
        return Health.NEUTRAL  # our own pool was full: nothing reached the relay
    if failure.reason in (Reason.UNSAFE_CONTENT, Reason.INTERNAL_ERROR):
        return Health.NEUTRAL  # refused (or failed) on our side, before any connection
    return Health.HEALTHY


def result(failure: WorkerFailure | None) -> str:
    """The ``result`` label of one send through one relay."""
    if failure is None:
        return "sent"
    if fails_over(failure):
        return "unavailable"
    if isinstance(failure, AmbiguousDelivery):
        return "unknown"
    if isinstance(failure, PermanentFailure):
        return "rejected"
    if isinstance(failure, ThrottledFailure):
        return "throttled"
    if isinstance(failure, DeferredFailure):
        return "deferred"
    return "transient"


def relabel_throttling(failure: WorkerFailure, relay: str) -> None:
    """A throttling answer about the relay (route ``relay``) slows that relay only: its route
    becomes ``relay:<name>``. A recipient domain's route is left as it is."""
    if isinstance(failure, ThrottledFailure) and failure.route == "relay":
        failure.route = relay_route(relay)
