"""The pure data path of one request: claim → resolve → fetch → render → send → record.

``Pipeline.attempt`` claims and sends and reports what happened (an ``Attempt``: a duplicate, a
classified failure or none); ``Pipeline.record`` writes the outcome the handler decided to the
ledger (its status, callback and retry copy) before the broker is told. The pipeline never
decides and never logs the outcome line: ``handler.py`` does both. No transaction is open across
SMTP or HTTP; each ledger call is its own short transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from email_worker.disposition import DeadLetter, Decision, Hold
from email_worker.message_ids import address_fingerprint, message_id_for
from email_worker.ports import (
    AlreadySent,
    Claim,
    Ledger,
    LedgerStatus,
    Mailbox,
    Mailer,
    NoPacer,
    NoSpans,
    NoSuppressions,
    Notifier,
    OutgoingEmail,
    Pacer,
    RecipientResolver,
    Record,
    Renderer,
    RetryCopy,
    Spans,
    Suppressions,
    TemplateSource,
)
from email_worker.suppression.policy import BulkMail
from schemas.callback import CallbackStatus
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    TransientFailure,
    WorkerFailure,
)
from schemas.inbound import PeekedIds
from schemas.request import EmailRequest

log = logging.getLogger("email_worker.outcome")

# Whether a URL from a message may be called back: its host is on the allow-list (the policy
# lives beside the callback sender, which parses URLs the same way; injected, so the core
# imports no HTTP library).
HostAllowed = Callable[[str, Sequence[str]], bool]


@dataclass(frozen=True)
class PipelineConfig:
    sender: str
    message_id_secret: bytes
    callback_url: str | None
    callback_allowed_hosts: tuple[str, ...]
    host_allowed: HostAllowed
    # How long to keep retrying the final ledger write in-process once the email is out: giving
    # up early would let a retry re-send an email that was delivered.
    record_patience_seconds: float = 30.0
    # A send_at more than this far ahead is held (and released by the poll, within a second or
    # so after it); none ahead is sent now. Zero: never before its send_at (CONTRACT 14).
    hold_threshold: timedelta = timedelta(0)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # The rest of the sender (CONTRACT 11; ``sender`` is the bare From address).
    sender_name: str | None = None
    reply_to: Mailbox | None = None
    envelope_from: str | None = None


@dataclass
class Attempt:
    """What happened to one request: the claim (None when it could not be claimed), whether it
    was a duplicate, the classified failure (None: sent), and what was rendered so far, so its
    record keeps it."""

    request_id: str
    claim: Claim | None = None
    duplicate: bool = False
    outcome: str = "duplicate"  # what a duplicate is acked as (``cancelled`` when cancelled)
    priority: int = 0
    failure: WorkerFailure | None = None
    email: OutgoingEmail | None = None
    reply: str | None = None
    relay: str | None = None  # the relay that took (or answered) the send, by name
    provider_message_id: str | None = None  # an HTTP API provider's id of the message
    fingerprint: tuple[str, str] | None = None
    hold_until: datetime | None = None  # a scheduled send not yet due: held in the ledger

    def record(self, decision: Decision) -> Record:
        failure = self.failure
        status = LedgerStatus.SENT
        callback: CallbackStatus | None = CallbackStatus.DELIVERED
        reason, detail = None, ""
        if isinstance(decision, Hold):  # waiting for send_at: no callback (a deferral)
            status, callback = LedgerStatus.SCHEDULED, None
        elif isinstance(decision, DeadLetter):
            status, callback = LedgerStatus.FAILED, CallbackStatus.FAILED
            reason, detail = decision.reason, decision.detail
        elif failure is not None:
            ambiguous = isinstance(failure, AmbiguousDelivery)
            status = LedgerStatus.UNKNOWN if ambiguous else LedgerStatus.PENDING
            reason, detail = failure.reason, failure.detail
            # `pending` once per counted attempt (CONTRACT 7): a deferral (open breaker, paused
            # consumer) spends none, so it writes no outbox row, only the ledger status.
            deferred = isinstance(failure, DeferredFailure)
            callback = None if deferred else CallbackStatus.PENDING
        email = self.email
        return Record(
            status=status,
            callback=callback,
            reason=reason,
            detail=detail,
            recipient=email.recipient if email else None,
            message_id=email.message_id if email else None,
            smtp_reply=self.reply,
            email=email.content if email else None,
            relay=self.relay,
            provider_message_id=self.provider_message_id,
        )


def _hard_bounce(failure: WorkerFailure) -> bool:
    """A permanent refusal of the recipient itself (5.1.x at RCPT), not a 5.7.x policy block."""
    return (
        isinstance(failure, PermanentFailure)
        and failure.reason == Reason.RECIPIENT_REJECTED
        and " 5.1." in f" {failure.detail}"
    )


def _is_database_down(exc: BaseException) -> bool:
    return isinstance(exc, DeferredFailure) and exc.reason == Reason.DATABASE_UNAVAILABLE


class Pipeline:
    """Wires the ports in data-flow order; the handler decides between ``attempt`` and
    ``record``."""

    def __init__(
        self,
        config: PipelineConfig,
        ledger: Ledger,
        recipients: RecipientResolver,
        templates: TemplateSource,
        renderer: Renderer,
        mailer: Mailer,
        notifier: Notifier,
        *,
        pacer: Pacer | None = None,
        suppressions: Suppressions | None = None,
        spans: Spans | None = None,
        bulk: BulkMail | None = None,
    ) -> None:
        self._config = config
        self._pacer: Pacer = pacer or NoPacer()
        self._suppressions: Suppressions = suppressions or NoSuppressions()
        self._bulk = bulk or BulkMail()  # PRIORITY_HIGH and one-click unsubscribe links
        self.spans: Spans = spans or NoSpans()
        self._ledger = ledger
        self._recipients = recipients
        self._templates = templates
        self._renderer = renderer
        self._mailer = mailer
        self._notifier = notifier
        self._sender_domain = config.sender.rpartition("@")[2]  # the Message-ID domain
        self._finish_patiently = retry(
            retry=retry_if_exception(_is_database_down),
            stop=stop_after_delay(config.record_patience_seconds),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        )(self._ledger.finish)

    def attempt(self, request: EmailRequest, amqp_priority: int | None = None) -> Attempt:
        """Claim ``request`` and, unless it was sent before (or is held until its ``send_at``,
        or expired), resolve, fetch, render and send. The priority is the higher of the
        message's and the AMQP property's (CONTRACT 13). Never raises: what went wrong is the
        attempt's classified failure."""
        attempt = Attempt(
            request.request_id, priority=max(request.priority or 0, amqp_priority or 0)
        )
        try:
            with self.spans.step("claim"):
                claim = self._ledger.claim(request)
        except PermanentFailure as failure:  # idempotency conflict: the ledger row stays as is
            self._safe_reject(request, failure)
            attempt.failure = failure
            return attempt
        except WorkerFailure as failure:
            attempt.failure = failure
            return attempt
        if isinstance(claim, AlreadySent):
            attempt.duplicate = True
            attempt.outcome = claim.outcome
            return attempt
        attempt.claim = claim
        # A claim past MAX_DELIVERIES carries its failure: recorded without another attempt.
        if claim.failure is not None:
            attempt.failure = claim.failure
        elif (expired := self._expired(request)) is not None:
            attempt.failure = expired
        elif (hold_until := self._hold_until(request)) is not None:
            attempt.hold_until = hold_until
        else:
            attempt.failure = self._send(request, attempt)
        return attempt

    def _expired(self, request: EmailRequest) -> PermanentFailure | None:
        if request.expires_at is not None and request.expires_at <= self._config.clock():
            return PermanentFailure(Reason.EXPIRED, "expires_at passed before it was sent")
        return None

    def _hold_until(self, request: EmailRequest) -> datetime | None:
        """When a request not due yet comes back: its send_at, or its expires_at when that
        is sooner (the copy then comes back to be failed as ``expired`` on time)."""
        send_at = request.send_at
        if send_at is None or send_at <= self._config.clock() + self._config.hold_threshold:
            return None
        expires_at = request.expires_at
        return send_at if expires_at is None else min(send_at, expires_at)

    def record(
        self,
        request: EmailRequest,
        attempt: Attempt,
        decision: Decision,
        copy: RetryCopy | None,
        spent: int | None = None,
    ) -> WorkerFailure | None:
        """Write the outcome ``decision`` gives ``attempt`` (with the retry copy, when one is
        scheduled) and hand its callback over. Returns the failure when the record was lost
        (lease taken over, database gone past patience): the ledger then decides its fate."""
        if attempt.claim is None:
            raise ValueError("an attempt that claimed nothing has nothing to record")
        record = self._with_callback_url(request, attempt.record(decision))
        if spent is not None:  # what the ledger shows as attempts: spent ones only
            record = replace(record, spent_attempts=spent)
        if copy is not None:  # the ledger keeps the copy: beat re-drives it if lost
            record = replace(record, retry=copy)
        traceparent = self.spans.traceparent()  # the message's span: its callback continues it
        if traceparent is not None and record.callback is not None:
            record = replace(record, traceparent=traceparent)
        try:
            with self.spans.step("record"):
                outbox_id = self._record(attempt.claim, request, record)
        except WorkerFailure as lost:
            return lost
        if outbox_id is not None:
            self._notifier.hand_over(outbox_id)
        return None

    def _record(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        """``Ledger.finish``, retried in-process while the database is down (the retry wrapper
        costs too much to sit on the hot path, so it is only entered after a failure)."""
        try:
            return self._ledger.finish(claim, request, record)
        except DeferredFailure as failure:
            if failure.reason != Reason.DATABASE_UNAVAILABLE:
                raise
        return self._finish_patiently(claim, request, record)

    def _send(self, request: EmailRequest, attempt: Attempt) -> WorkerFailure | None:
        """Resolve, fetch, render and send; what was done so far is kept on ``attempt``."""
        try:
            recipient = self._recipients.resolve(request)
            attempt.fingerprint = address_fingerprint(
                recipient.address, self._config.message_id_secret
            )
            suppressed = self._suppressed(attempt.claim, recipient.address)
            # Nothing goes to the relay (CONTRACT 15); an unsubscribe stops bulk mail only.
            if suppressed is not None and self._bulk.suppresses(suppressed, attempt.priority):
                return PermanentFailure(Reason.SUPPRESSED, suppressed)
            with self.spans.step("template"):
                template = self._templates.get(request.template_code, request.language)
            variables: dict[str, object] = dict(request.variables)
            if recipient.name and "name" not in variables:
                variables["name"] = recipient.name
            with self.spans.step("render"):
                content = self._renderer.render(template, variables)
            content = self._bulk.headers(content, recipient.address, attempt.priority)
            attempt.email = OutgoingEmail(
                sender=self._config.sender,
                recipient=recipient.address,
                message_id=message_id_for(
                    request.request_id, self._config.message_id_secret, self._sender_domain
                ),
                content=content,
                sender_name=self._config.sender_name,
                reply_to=self._config.reply_to,
                envelope_from=self._config.envelope_from,
                priority=attempt.priority,  # the order of its relay's turn (RelayPacer)
            )
            return self._deliver(request, attempt, attempt.email)
        except WorkerFailure as failure:
            return failure
        except Exception as exc:  # a bug must not lose the message: retry, then dead-letter
            log.exception("unexpected error in the pipeline")
            return TransientFailure(Reason.INTERNAL_ERROR, type(exc).__name__)
        return None

    def _suppressed(self, claim: Claim | None, address: str) -> str | None:
        """The suppression reason of ``address``: the claim's answer when it checked this very
        address, else the list's (``Suppressions.check``)."""
        checked = claim.suppression if claim is not None else None
        if checked is not None and checked.address == address:
            return checked.reason
        return self._suppressions.check(address)

    def _deliver(
        self, request: EmailRequest, attempt: Attempt, email: OutgoingEmail
    ) -> WorkerFailure | None:
        """Wait for the routes' tokens, send, and tell the pacer and the suppression list what
        the relay said."""
        domain = email.recipient.rpartition("@")[2].lower()
        self._pacer.wait_turn(domain, attempt.priority)  # raises ThrottledFailure
        expired = self._expired(request)  # the wait may have outlived the message
        if expired is not None:
            return expired
        try:
            with self.spans.step("send"):
                sent = self._mailer.send(email)
                self.spans.annotate({"relay": sent.relay})  # a name: never a credential
        except WorkerFailure as failure:
            attempt.relay = failure.relay  # the relay that answered, if one did
            self._pacer.report(domain, failure)
            if _hard_bounce(failure):
                self._suppressions.hard_bounce(email.recipient, failure.detail)
            return failure
        attempt.reply, attempt.relay = sent.reply, sent.relay
        attempt.provider_message_id = sent.provider_message_id
        self._pacer.report(domain, None)
        return None

    def _with_callback_url(self, request: EmailRequest, record: Record) -> Record:
        url = self._callback_url(request)
        if url is None:
            return record
        return replace(record, callback_url=url)

    def _callback_url(self, request: EmailRequest) -> str | None:
        if request.callback_url:
            allowed = self._config.callback_allowed_hosts
            if self._config.host_allowed(request.callback_url, allowed):
                return request.callback_url
            log.warning("callback_url ignored: its host is not on the allow-list")
        return self._config.callback_url

    def reject_invalid(self, ids: PeekedIds, failure: PermanentFailure) -> None:
        """A ``failed`` callback for a refused message that still carries an id (CONTRACT 7),
        to the operator's URL (a refused message's own URL is not trusted). Its ledger row is
        keyed by the request_id, else by the id the callback is about."""
        key = ids.request_id or ids.callback_id
        if key is None or self._config.callback_url is None:
            return
        try:
            outbox_id = self._ledger.reject(
                key,
                ids.callback_id or key,
                ids.correlation or key,
                failure.reason,
                failure.detail,
                self._config.callback_url,
            )
        except WorkerFailure:
            log.warning("could not record the rejection; the dead letter still carries it")
            return
        if outbox_id is not None:
            self._notifier.hand_over(outbox_id)

    def _safe_reject(self, request: EmailRequest, failure: PermanentFailure) -> None:
        try:
            self._ledger.reject(
                request.request_id,
                request.notification_id,
                request.correlation_id,
                failure.reason,
                failure.detail,
                self._callback_url(request),
            )
        except WorkerFailure:
            log.warning("could not record the conflict event")
