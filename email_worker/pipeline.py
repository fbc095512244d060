"""The data path of one message: validate → claim → resolve → fetch → render → send → record.

``Pipeline.handle`` never raises: every message leaves with a ``Decision`` (ack, retry or dead
letter) and, once claimed, a ledger record of the outcome written before the broker is told.
No transaction is open across SMTP or HTTP; each ledger call is its own short transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from email_worker import retry_copies
from email_worker.consumer import Delivery
from email_worker.disposition import Ack, DeadLetter, Decision, Retry, RetryPolicy, decide
from email_worker.logs import request_context
from email_worker.message_ids import address_fingerprint, message_id_for
from email_worker.ports import (
    AlreadySent,
    Claim,
    Ledger,
    LedgerStatus,
    Mailer,
    Notifier,
    OutgoingEmail,
    RecipientResolver,
    Record,
    Renderer,
    TemplateSource,
)
from email_worker.url_policy import host_allowed
from schemas.callback import CallbackStatus
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    TransientFailure,
    WorkerFailure,
)
from schemas.inbound import PeekedIds, parse_message, peek_ids
from schemas.request import EmailRequest

log = logging.getLogger("email_worker.outcome")


@dataclass(frozen=True)
class PipelineConfig:
    sender: str
    message_id_secret: bytes
    policy: RetryPolicy
    max_message_bytes: int
    callback_url: str | None
    callback_allowed_hosts: tuple[str, ...]
    # How long to keep retrying the final ledger write in-process once the email is out: giving
    # up early would let a retry re-send an email that was delivered.
    record_patience_seconds: float = 30.0


@dataclass
class _Attempt:
    """What one attempt produced so far, so its record keeps whatever was rendered."""

    email: OutgoingEmail | None = None
    reply: str | None = None
    fingerprint: tuple[str, str] | None = None

    def record(self, failure: WorkerFailure | None, decision: Decision) -> Record:
        status = LedgerStatus.SENT
        callback: CallbackStatus | None = CallbackStatus.DELIVERED
        reason, detail = None, ""
        if isinstance(decision, DeadLetter):
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
        )


def _is_database_down(exc: BaseException) -> bool:
    return isinstance(exc, DeferredFailure) and exc.reason == Reason.DATABASE_UNAVAILABLE


class Pipeline:
    """Wires the ports in data-flow order; all retry decisions come from ``decide``."""

    def __init__(
        self,
        config: PipelineConfig,
        ledger: Ledger,
        recipients: RecipientResolver,
        templates: TemplateSource,
        renderer: Renderer,
        mailer: Mailer,
        notifier: Notifier,
    ) -> None:
        self._config = config
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

    def handle(self, delivery: Delivery) -> Decision:
        """Process one delivery to a decision. Never raises."""
        started = time.monotonic()
        correlation = delivery.properties.correlation_id
        try:
            request = parse_message(
                delivery.body,
                max_bytes=self._config.max_message_bytes,
                amqp_correlation_id=correlation,
            )
        except PermanentFailure as failure:
            ids = peek_ids(
                delivery.body,
                message_id=delivery.properties.message_id,
                correlation_id=correlation,
            )
            key = ids.request_id or ids.callback_id
            with request_context(key, ids.correlation or key):
                self._reject_invalid(ids, failure)
                return self._conclude(delivery, failure, started)
        with request_context(request.request_id, request.correlation_id):
            return self._claimed_path(request, delivery, started)

    def _claimed_path(self, request: EmailRequest, delivery: Delivery, started: float) -> Decision:
        try:
            claim = self._ledger.claim(request)
        except PermanentFailure as failure:  # idempotency conflict: the ledger row stays as is
            self._safe_reject(request, failure)
            return self._conclude(delivery, failure, started)
        except WorkerFailure as failure:
            return self._conclude(delivery, failure, started)
        if isinstance(claim, AlreadySent):
            return self._conclude(delivery, None, started, outcome="duplicate")
        return self._send_path(request, claim, delivery, started)

    def _send_path(
        self, request: EmailRequest, claim: Claim, delivery: Delivery, started: float
    ) -> Decision:
        attempt = _Attempt()
        # A claim past MAX_DELIVERIES carries its failure: recorded without another attempt.
        failure = claim.failure if claim.failure is not None else self._attempt(request, attempt)
        decision = decide(failure, delivery.attempts, delivery.deferrals, self._config.policy)
        record = self._with_callback_url(request, attempt.record(failure, decision))
        if isinstance(decision, Retry):  # the ledger keeps the copy: beat re-drives it if lost
            record = replace(record, retry=retry_copies.keep(delivery, decision))
        try:
            outbox_id = self._record(claim, request, record)
        except WorkerFailure as lost:  # lease taken over or database gone: let the ledger decide
            return self._conclude(delivery, lost, started, fp=attempt.fingerprint)
        if outbox_id is not None:
            self._notifier.hand_over(outbox_id)
        return self._conclude(delivery, failure, started, decision=decision, fp=attempt.fingerprint)

    def _record(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        """``Ledger.finish``, retried in-process while the database is down (the retry wrapper
        costs too much to sit on the hot path, so it is only entered after a failure)."""
        try:
            return self._ledger.finish(claim, request, record)
        except DeferredFailure as failure:
            if failure.reason != Reason.DATABASE_UNAVAILABLE:
                raise
        return self._finish_patiently(claim, request, record)

    def _attempt(self, request: EmailRequest, attempt: _Attempt) -> WorkerFailure | None:
        """Resolve, fetch, render and send; what was done so far is kept on ``attempt``."""
        try:
            recipient = self._recipients.resolve(request)
            attempt.fingerprint = address_fingerprint(
                recipient.address, self._config.message_id_secret
            )
            template = self._templates.get(request.template_code, request.language)
            variables: dict[str, object] = dict(request.variables)
            if recipient.name and "name" not in variables:
                variables["name"] = recipient.name
            attempt.email = OutgoingEmail(
                sender=self._config.sender,
                recipient=recipient.address,
                message_id=message_id_for(
                    request.request_id, self._config.message_id_secret, self._sender_domain
                ),
                content=self._renderer.render(template, variables),
            )
            attempt.reply = self._mailer.send(attempt.email)
        except WorkerFailure as failure:
            return failure
        except Exception as exc:  # a bug must not lose the message: retry, then dead-letter
            log.exception("unexpected error in the pipeline")
            return TransientFailure(Reason.INTERNAL_ERROR, type(exc).__name__)
        return None

    def _with_callback_url(self, request: EmailRequest, record: Record) -> Record:
        url = self._callback_url(request)
        if url is None:
            return record
        return replace(record, callback_url=url)

    def _callback_url(self, request: EmailRequest) -> str | None:
        if request.callback_url:
            if host_allowed(request.callback_url, self._config.callback_allowed_hosts):
                return request.callback_url
            log.warning("callback_url ignored: its host is not on the allow-list")
        return self._config.callback_url

    def _reject_invalid(self, ids: PeekedIds, failure: PermanentFailure) -> None:
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

    def _conclude(
        self,
        delivery: Delivery,
        failure: WorkerFailure | None,
        started: float,
        *,
        outcome: str | None = None,
        decision: Decision | None = None,
        fp: tuple[str, str] | None = None,
    ) -> Decision:
        if decision is None:
            decision = (
                Ack(outcome)
                if outcome
                else decide(failure, delivery.attempts, delivery.deferrals, self._config.policy)
            )
        _log_outcome(delivery, decision, started, fp)
        return decision


def _log_outcome(
    delivery: Delivery, decision: Decision, started: float, fp: tuple[str, str] | None
) -> None:
    fields: dict[str, object] = {
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "attempt": delivery.attempts + 1,
        "redelivered": delivery.redelivered,
    }
    if fp is not None:
        fields["recipient_domain"], fields["recipient_hash"] = fp
    if isinstance(decision, Ack):
        fields["outcome"] = decision.outcome
    elif isinstance(decision, Retry):
        fields |= {
            "outcome": "retried",
            "reason": str(decision.reason),
            "detail": decision.detail,
            "retry_in_s": round(decision.delay, 1),
        }
    else:
        fields |= {
            "outcome": "dead_lettered",
            "reason": str(decision.reason),
            "detail": decision.detail,
        }
    level = logging.WARNING if isinstance(decision, DeadLetter) else logging.INFO
    log.log(level, "message %s", fields["outcome"], extra=fields)
