"""The ports of the pure core: what the handler and the pipeline need from the world, as
``Protocol``s, and the neutral delivery the broker hands to the handler (no broker type).

Adapters (psycopg2, httpx, smtplib, celery) implement them and are wired in ``email_worker.app``;
unit tests use the in-memory fakes in ``tests/fakes.py``. Every port raises only
``schemas.failures`` errors for failures it can classify.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from schemas.callback import CallbackStatus
from schemas.failures import Reason, WorkerFailure
from schemas.request import EmailRequest
from templates_client.template import Template


class LedgerStatus(StrEnum):
    """States of a request in the ledger (RELIABILITY rule 8)."""

    PENDING = "pending"  # a retry is scheduled
    SENDING = "sending"  # leased: a worker owns it until lease expiry
    SENT = "sent"  # the relay answered 250 after DATA
    FAILED = "failed"  # dead-lettered
    UNKNOWN = "unknown"  # the connection was lost after the final dot: maybe delivered
    SCHEDULED = "scheduled"  # held in the ledger until its send_at (CONTRACT section 14)
    BOUNCED = "bounced"  # sent, then a bounce report came back (CONTRACT section 15)
    COMPLAINED = "complained"  # sent, then the recipient complained (CONTRACT section 15)


@dataclass(frozen=True)
class MessageProperties:
    """The AMQP basic properties of a message as plain values: what ``broker/`` read from the
    broker's own type, all of them, so a retry or dead-letter copy keeps them unchanged."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, object] = field(default_factory=dict)
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One message as received: the body byte for byte, its properties, where it came from
    (delivery tag and channel generation, for the broker side) and the retry counts carried in
    the worker's own headers (``broker/settle.py`` names them)."""

    body: bytes
    properties: MessageProperties
    delivery_tag: int
    generation: int
    redelivered: bool
    attempts: int
    deferrals: int
    first_attempt_at: str | None


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str | None = None


@dataclass(frozen=True)
class RenderedEmail:
    """Rendered, checked content: every header value here passed the header-safety check."""

    subject: str
    html: str
    text: str
    template_code: str
    template_version: str
    list_unsubscribe: str | None = None
    # "List-Unsubscribe=One-Click" (RFC 8058) when the worker's own one-click URL is in
    # ``list_unsubscribe`` (email_worker/suppression/policy.py); None for a template's header.
    list_unsubscribe_post: str | None = None


@dataclass(frozen=True)
class Mailbox:
    """One address and its optional display name (``Reply-To``; CONTRACT section 11)."""

    address: str
    name: str | None = None


@dataclass(frozen=True)
class OutgoingEmail:
    """One email to build and send. ``sender`` is the bare From address (its domain is the
    Message-ID domain); the sender fields come from configuration, never from a message or a
    template (CONTRACT section 11)."""

    sender: str
    recipient: str
    message_id: str
    content: RenderedEmail
    sender_name: str | None = None  # From's display name
    reply_to: Mailbox | None = None
    envelope_from: str | None = None  # MAIL FROM when not ``sender`` (RETURN_PATH)
    # The send's priority (CONTRACT 13): the order in which it takes its relay's turn
    # (``RelayPacer.wait_relay``). Pacing only: no header is derived from it.
    priority: int = 0

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (MAIL FROM): ``RETURN_PATH`` when set, else the From address."""
        return self.envelope_from or self.sender


@dataclass(frozen=True)
class SuppressionCheck:
    """The suppression list's answer for ``address``, read with the claim (in the same
    statement: one round trip less per message): its reason, or None when not listed."""

    address: str
    reason: str | None


@dataclass(frozen=True)
class Claim:
    """Proof that this worker owns the request until the lease expires. ``lease`` fences
    every later write: a worker whose lease was taken over updates nothing."""

    request_id: str
    lease: str
    attempt: int  # claims of this request so far, this one included
    taken_over: bool = False  # an expired lease (a crashed worker's) was taken over
    # Claims in a row that recorded no outcome, this one included (1 unless workers died
    # holding the request), and the failure the ledger classified from it: past
    # MAX_DELIVERIES, ``PermanentFailure(REDELIVERY_LIMIT)``, recorded instead of an attempt.
    deliveries: int = 1
    failure: WorkerFailure | None = None
    # The message's own address checked against the suppression list by the claim; None when
    # the ledger did not check (the pipeline asks ``Suppressions`` then).
    suppression: SuppressionCheck | None = None


@dataclass(frozen=True)
class AlreadySent:
    """The request reached a final outcome before: nothing is sent again. ``outcome`` is what
    the message is acked as (``duplicate``; ``cancelled`` for a request cancelled before it
    was sent)."""

    request_id: str
    message_id: str | None
    outcome: str = "duplicate"


@dataclass(frozen=True)
class Record:
    """One outcome written by ``Ledger.finish`` in a single transaction with its event and
    (when ``callback`` is set and a callback URL is known) its outbox row."""

    status: LedgerStatus
    callback: CallbackStatus | None
    reason: Reason | None = None
    detail: str = ""
    recipient: str | None = None
    message_id: str | None = None
    smtp_reply: str | None = None
    email: RenderedEmail | None = None
    callback_url: str | None = None
    retry: RetryCopy | None = None  # set when the outcome schedules a retry
    # Attempts spent so far, this outcome's included (CONTRACT v2 "Attempts"); None keeps the
    # ledger's count.
    spent_attempts: int | None = None
    relay: str | None = None  # the relay that took (or answered) the send: its name
    provider_message_id: str | None = None  # an HTTP API provider's id (migration 008)
    # The W3C traceparent of the message's span (tracing on): kept in the outbox row, so the
    # callback's POST continues the trace (CONTRACT section 18).
    traceparent: str | None = None


@dataclass(frozen=True)
class RetryCopy:
    """What the ledger keeps of a message whose retry is scheduled, so that a copy the broker
    lost can be rebuilt and re-driven (``email_worker/broker/retry_copies.py``)."""

    due_in: float  # seconds until the copy is due back from its delay queue
    body: bytes  # exactly as received
    properties: Mapping[str, object]  # JSON-safe AMQP properties and scalar headers


class Ledger(Protocol):
    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        """Claim ``request`` in one statement. Raises ``PermanentFailure(IDEMPOTENCY_CONFLICT)``
        when the id is known with another payload, ``DeferredFailure(LEASE_BUSY)`` while another
        worker's lease is live, ``DeferredFailure(DATABASE_UNAVAILABLE)`` when Postgres is down.
        A request redelivered past MAX_DELIVERIES is still claimed (the lease fences its
        record), with ``Claim.failure`` set: the caller records that instead of attempting.
        Clears the request's scheduled-retry mark: its copy came back."""
        ...

    def finish(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        """Write ``record`` fenced by the lease; return the outbox id to hand over, if any.
        With ``record.retry``, also keeps the copy and when it is due (beat re-drives it if the
        broker loses it). Raises ``DeferredFailure(LEASE_LOST)`` when the lease was taken over
        (0 rows updated)."""
        ...

    def reject(
        self,
        request_id: str,
        notification_id: str,
        correlation_id: str,
        reason: Reason,
        detail: str,
        callback_url: str | None,
    ) -> int | None:
        """Record a message refused before any claim (invalid, conflicting). Never changes the
        status of an existing request; returns the outbox id of a ``failed`` callback, if any."""
        ...


class TemplateSource(Protocol):
    def get(self, code: str, language: str | None) -> Template:
        """Raises ``PermanentFailure(TEMPLATE_NOT_FOUND)``, ``TransientFailure`` or
        ``DeferredFailure(TEMPLATE_SERVICE_UNAVAILABLE)`` while the breaker is open."""
        ...


class RecipientResolver(Protocol):
    def resolve(self, request: EmailRequest) -> Recipient:
        """The validated recipient: from the message, else from the user service. Raises
        ``PermanentFailure`` (missing, invalid, unknown, opted_out) or a transient failure."""
        ...


class Renderer(Protocol):
    def render(self, template: Template, variables: dict[str, object]) -> RenderedEmail:
        """Raises ``PermanentFailure(TEMPLATE_ERROR | UNSAFE_CONTENT)``."""
        ...


@dataclass(frozen=True)
class Sent:
    """A relay accepted the message: its final reply (e.g. ``250 2.0.0 queued``) and the
    relay's name (a URL without credentials, or its ``?name=``; ``email_worker/relays/``)."""

    reply: str
    relay: str
    # The id an HTTP API provider gave the message (email_worker/providers/), kept in the
    # ledger so that its bounce reports tie back to the request; None for SMTP relays.
    provider_message_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    """What a relay transport that names the message returns instead of a bare reply (the
    HTTP API providers): the reply and the provider's id of the message."""

    reply: str
    provider_message_id: str | None = None


class Mailer(Protocol):
    def send(self, email: OutgoingEmail) -> Sent:
        """Send once (through one relay, or another when the first could not have accepted
        it). Raises ``PermanentFailure`` (5xx), ``TransientFailure`` (4xx, connection),
        ``AmbiguousDelivery`` (lost after the final dot) or ``SystemicFailure`` (535, TLS);
        a failure a relay answered carries its name in ``relay``."""
        ...


class Notifier(Protocol):
    def hand_over(self, outbox_id: int) -> None:
        """Best effort: ask the callback dispatcher to deliver now. Never raises; a row that
        was not handed over is re-driven by ``email-worker beat``."""
        ...


class Pacer(Protocol):
    """Rate limits and throttling (CONTRACT section 12), shared by every replica."""

    def wait_turn(self, domain: str, priority: int) -> None:
        """Block until every route this send takes whatever its relay (``relay`` under
        ``RATE_LIMIT`` or throttled, the recipient domain's when limited or throttled) gives
        it a token, the highest priority first; the relay's own route is ``RelayPacer``'s.
        Raises ``ThrottledFailure`` when the wait would be longer than a thread may hold: the
        message is deferred without spending an attempt."""
        ...

    def report(self, domain: str, failure: WorkerFailure | None) -> None:
        """After each send: a ``ThrottledFailure`` slows its route, a success lets it recover.
        A relay's own route (``relay:<name>``) is the ``RelayPacer``'s, left alone here.
        Never raises."""
        ...


class RelayPacer(Protocol):
    """One relay's own route ``relay:<name>`` (CONTRACT 12 and 16): the relay router asks
    for the chosen relay's turn right before handing it the message, and reports its answer,
    so that a throttled relay slows the sends through that relay only."""

    def wait_relay(self, name: str, priority: int, patience: float | None = None) -> None:
        """Block until the relay's route (when limited or throttled) gives this send a slot,
        the highest priority first. Raises ``ThrottledFailure`` with route ``relay:<name>``
        when that slot is further away than a thread may wait, or than ``patience`` (shorter,
        when another relay could take the message: the router then hands it on), or of
        another route the send holds a slot of (its
        ``RATE_LIMIT`` slot went stale during the wait and no fresh one is near)."""
        ...

    def report_relay(self, name: str, failure: WorkerFailure | None) -> None:
        """After the relay answered: a success lets its route recover, a ``ThrottledFailure``
        of route ``relay:<name>`` slows that relay only. Never raises."""
        ...


class Suppressions(Protocol):
    """The suppression list (CONTRACT section 15)."""

    def check(self, address: str) -> str | None:
        """The reason the address is suppressed (``hard_bounce``, ``complaint``,
        ``unsubscribe``, ``manual``), or None. Raises ``DeferredFailure`` when the list cannot
        be read (nothing is sent to an address that might be suppressed)."""
        ...

    def hard_bounce(self, address: str, detail: str) -> None:
        """Best effort: the relay refused the recipient permanently (5.1.x at RCPT)."""
        ...


class UnsubscribeLinks(Protocol):
    """One-click unsubscribe URLs (CONTRACT section 15)."""

    def url_for(self, address: str) -> str:
        """``UNSUBSCRIBE_URL`` with an opaque token for ``address`` (no address in it)."""
        ...


class Spans(Protocol):
    """Tracing (CONTRACT section 18): a span per message and per step. Attributes never hold
    an address, subject, body or variable."""

    def message(
        self, headers: Mapping[str, object], attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[None]:
        """The message's span, continuing the trace of ``traceparent``/``tracestate`` in
        ``headers`` when present."""
        ...

    def step(
        self, name: str, attributes: Mapping[str, str | int] | None = None
    ) -> AbstractContextManager[None]:
        """A child span of the current message span (claim, template, render, send, record)."""
        ...

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the current span, for the callback's POST; None when
        tracing is off."""
        ...

    def annotate(self, attributes: Mapping[str, str | int]) -> None:
        """Add attributes to the current span: the message's outcome and reason code, or the
        relay that took a send (the hook for an adapter that knows it). Never raises."""
        ...


class NoPacer:
    """No rate limit, no throttling memory."""

    def wait_turn(self, domain: str, priority: int) -> None:
        return None

    def report(self, domain: str, failure: WorkerFailure | None) -> None:
        return None


class NoRelayPacer:
    """No relay of its own route: every relay's turn is now."""

    def wait_relay(self, name: str, priority: int, patience: float | None = None) -> None:
        return None

    def report_relay(self, name: str, failure: WorkerFailure | None) -> None:
        return None


class NoSuppressions:
    """No suppression list (unit tests, tools that send nothing)."""

    def check(self, address: str) -> str | None:
        return None

    def hard_bounce(self, address: str, detail: str) -> None:
        return None


_NULL: AbstractContextManager[None] = nullcontext()


class NoSpans:
    """Tracing off: no span, no cost beyond a shared null context."""

    def message(
        self, headers: Mapping[str, object], attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[None]:
        return _NULL

    def step(
        self, name: str, attributes: Mapping[str, str | int] | None = None
    ) -> AbstractContextManager[None]:
        return _NULL

    def traceparent(self) -> str | None:
        return None

    def annotate(self, attributes: Mapping[str, str | int]) -> None:
        return None
