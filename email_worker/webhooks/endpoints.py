"""One endpoint per provider: authenticate exactly as the provider signs, parse, then act
(``email_worker.reports.intake``). Nothing is parsed before it is authenticated, except what
the authentication itself needs (SNS and Mailgun carry their signature in the body), and
nothing is acted on when either step fails: the answer is a 4xx and nothing changes.

Freshness and replays (signed timestamps only):
- SendGrid signs a timestamp with the body; it retries undelivered events "for up to 24 hours
  after the event occurs" (https://docs.sendgrid.com/for-developers/tracking-events/troubleshooting),
  so a timestamp may be up to ``SENDGRID_PAST`` (25 h) old and ``FUTURE`` (5 min) ahead;
- Mailgun signs a timestamp and a token (not the body) and retries for 8 hours
  (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries), so
  ``MAILGUN_PAST`` is 9 h;
- each token (Mailgun) or signed timestamp-and-body (SendGrid) is claimed once in Postgres for
  its whole window (``webhook_replays``) before anything is acted on: a replay inside the window
  is refused, and one after it fails the freshness check. When acting fails (the database is
  down) the claim is dropped, so the provider's retry is taken.
- SNS signs no freshness (it retries for a long time, per the topic's delivery policy): a
  replayed notification only repeats effects that are idempotent.

Refusals: Mailgun gets 406 (its only "do not retry" answer); the others 401 (no or wrong
credentials) or 403 (a signature that does not verify, a stale timestamp, a replay).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from email_worker.reports.dsn import mime_reports
from email_worker.reports.intake import Outcome, ReportIntake
from email_worker.reports.mailgun import mailgun_reports, parse_mailgun
from email_worker.reports.postmark import postmark_reports
from email_worker.reports.sendgrid import sendgrid_reports
from email_worker.reports.ses import (
    NOTIFICATION,
    parse_sns,
    ses_reports,
    sns_certificate_url,
    string_to_sign,
)
from email_worker.webhooks.shared_secrets import (
    basic_auth_ok,
    bearer_ok,
    fresh,
    mailgun_signature_ok,
)
from email_worker.webhooks.signatures import SendGridKey, SnsCertificates

log = logging.getLogger(__name__)

FUTURE = 300.0
SENDGRID_PAST = 25 * 3600.0
MAILGUN_PAST = 9 * 3600.0
Headers = Mapping[str, str]  # names lower-cased
Answer = tuple[int, dict[str, object], dict[str, str]]


class Refused(Exception):
    """The request is not authentic (or is a replay): ``status`` is the answer, ``result`` the
    metric label."""

    def __init__(self, status: int, result: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.result, self.message = status, result, message
        self.headers = {name.replace("_", "-"): value for name, value in headers.items()}


class ReplayGuard(Protocol):
    def claim(self, provider: str, token: str, seconds: float) -> bool: ...

    def forget(self, provider: str, token: str) -> None: ...


def _accepted(outcome: Outcome) -> Answer:
    return 200, outcome.body(), {}


@contextmanager
def _claimed(replays: ReplayGuard, provider: str, token: str, seconds: float) -> Iterator[None]:
    """Claim ``token`` for the block (``Refused`` when it was claimed before); drop the claim
    when the block fails, so the provider's retry is taken."""
    if not replays.claim(provider, token, seconds):
        raise Refused(406 if provider == "mailgun" else 403, "replayed", "already received")
    try:
        yield
    except Exception:
        try:
            replays.forget(provider, token)
        except Exception:  # the database is down: the claim stays (see the docstring)
            log.warning("could not drop a webhook replay claim", extra={"provider": provider})
        raise


class SesEndpoint:
    provider = "ses"

    def __init__(self, certificates: SnsCertificates, intake: ReportIntake) -> None:
        self._certificates, self._intake = certificates, intake

    def answer(self, headers: Headers, body: bytes) -> Answer:
        message = parse_sns(body)
        signed = string_to_sign(message)
        if not self._certificates.verify(signed, message.signature, message.signature_version):
            # Where the operator can get the certificate from, when it really is SNS's (it
            # rotates): the URL a message claims, shown only when it is an SNS host's.
            claimed = sns_certificate_url(message.signing_cert_url)
            log.warning(
                "SNS signature does not verify against SES_SNS_CERT_FILE",
                extra={"topic_arn": message.topic_arn, "signing_cert_url": claimed},
            )
            raise Refused(403, "bad_signature", "the SNS signature does not verify")
        if message.type != NOTIFICATION:
            return self._confirmation(message.type, message.topic_arn, message.fields)
        reports = ses_reports(message.fields["Message"])
        return _accepted(self._intake.take(self.provider, reports, vouched=True))

    def _confirmation(self, kind: str, topic: str, fields: Mapping[str, str]) -> Answer:
        # Never confirmed automatically: anyone can subscribe this URL to a topic of their own
        # AWS account, and SNS signs their notifications with the same certificate. The
        # operator confirms the topic they mean (the SubscribeURL is SNS's own, signed).
        log.warning(
            "SNS %s received: not confirmed automatically; confirm it if the topic is yours",
            kind,
            extra={"topic_arn": topic, "subscribe_url": fields.get("SubscribeURL")},
        )
        body: dict[str, object] = {
            "status": "not_confirmed",
            "topic_arn": topic,
            "message": "visit the SubscribeURL, or run aws sns confirm-subscription with the"
            " TopicArn and Token, if this topic is yours",
        }
        return 200, body, {}


class SendGridEndpoint:
    provider = "sendgrid"

    def __init__(
        self,
        key: SendGridKey,
        intake: ReportIntake,
        replays: ReplayGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self._intake, self._replays, self._clock = key, intake, replays, clock

    def answer(self, headers: Headers, body: bytes) -> Answer:
        signature = headers.get("x-twilio-email-event-webhook-signature", "")
        timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
        if not signature or not timestamp:
            raise Refused(401, "unauthenticated", "the Signed Event Webhook headers are missing")
        if not fresh(timestamp, self._clock(), past=SENDGRID_PAST, future=FUTURE):
            raise Refused(403, "stale", "the signed timestamp is outside the accepted window")
        if not self._key.verify(timestamp, body, signature):
            raise Refused(403, "bad_signature", "the event webhook signature does not verify")
        # What the signature covers, not the signature: an ECDSA signature has twins.
        token = f"{timestamp}.{hashlib.sha256(body).hexdigest()}"
        reports = sendgrid_reports(body)
        with _claimed(self._replays, self.provider, token, SENDGRID_PAST + FUTURE):
            return _accepted(self._intake.take(self.provider, reports, vouched=True))


class MailgunEndpoint:
    provider = "mailgun"

    def __init__(
        self,
        signing_key: str,
        intake: ReportIntake,
        replays: ReplayGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self._intake, self._replays, self._clock = signing_key, intake, replays, clock

    def answer(self, headers: Headers, body: bytes) -> Answer:
        post = parse_mailgun(body)
        signed = post.signature
        if not fresh(signed.timestamp, self._clock(), past=MAILGUN_PAST, future=FUTURE):
            raise Refused(406, "stale", "the signed timestamp is outside the accepted window")
        if not mailgun_signature_ok(self._key, signed.timestamp, signed.token, signed.signature):
            raise Refused(406, "bad_signature", "the webhook signature does not verify")
        reports = mailgun_reports(post.event)
        with _claimed(self._replays, self.provider, signed.token, MAILGUN_PAST + FUTURE):
            return _accepted(self._intake.take(self.provider, reports, vouched=True))


class PostmarkEndpoint:
    provider = "postmark"

    def __init__(self, username: str, password: str, intake: ReportIntake) -> None:
        self._username, self._password, self._intake = username, password, intake

    def answer(self, headers: Headers, body: bytes) -> Answer:
        if not basic_auth_ok(headers.get("authorization"), self._username, self._password):
            challenge = 'Basic realm="webhooks", charset="UTF-8"'
            raise Refused(
                401, "unauthenticated", "basic credentials required", WWW_Authenticate=challenge
            )
        reports = postmark_reports(body)
        return _accepted(self._intake.take(self.provider, reports, vouched=True))


class DsnEndpoint:
    provider = "dsn"

    def __init__(self, token: str, intake: ReportIntake) -> None:
        self._token, self._intake = token, intake

    def answer(self, headers: Headers, body: bytes) -> Answer:
        if not bearer_ok(headers.get("authorization"), self._token):
            raise Refused(
                401, "unauthenticated", "a bearer token is required", WWW_Authenticate="Bearer"
            )
        reports = mime_reports(body)
        # Mail from anywhere: it acts only through the request it ties to (see intake).
        return _accepted(self._intake.take(self.provider, reports, vouched=False))
