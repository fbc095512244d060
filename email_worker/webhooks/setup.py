"""The webhook route assembled from plain values (``email_worker.app.build`` reads them from
``Settings``): one endpoint per provider whose setting is set, none for the others (their
paths answer 404), all sharing one intake over the suppression list and the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.ledger.db import Database
from email_worker.ledger.reports import PgReportLedger
from email_worker.ledger.suppressions import SuppressionStore
from email_worker.ops.metrics import count_report, count_webhook
from email_worker.ports import Notifier
from email_worker.reports.intake import ReportIntake
from email_worker.webhooks.dispatch import Endpoint, WebhookDispatcher
from email_worker.webhooks.endpoints import (
    DsnEndpoint,
    MailgunEndpoint,
    PostmarkEndpoint,
    SendGridEndpoint,
    SesEndpoint,
)
from email_worker.webhooks.signatures import SendGridKey, SnsCertificates


@dataclass(frozen=True)
class WebhookConfig:
    """What each endpoint needs; None turns it off. ``ses_certificates`` is the PEM content of
    ``SES_SNS_CERT_FILE``; ``postmark`` the (user name, password) pair."""

    ses_certificates: bytes | None = None
    sendgrid_public_key: str | None = None
    mailgun_signing_key: str | None = None
    postmark: tuple[str, str] | None = None
    dsn_token: str | None = None

    @property
    def any(self) -> bool:
        return any(
            value is not None
            for value in (
                self.ses_certificates,
                self.sendgrid_public_key,
                self.mailgun_signing_key,
                self.postmark,
                self.dsn_token,
            )
        )


def endpoints(
    config: WebhookConfig, intake: ReportIntake, replays: PgReportLedger
) -> list[Endpoint]:
    """The configured endpoints. Raises ``ValueError`` for a certificate or key that cannot be
    used (Settings has checked them at start-up already)."""
    found: list[Endpoint] = []
    if config.ses_certificates is not None:
        found.append(SesEndpoint(SnsCertificates.from_pem(config.ses_certificates), intake))
    if config.sendgrid_public_key is not None:
        key = SendGridKey.from_text(config.sendgrid_public_key)
        found.append(SendGridEndpoint(key, intake, replays))
    if config.mailgun_signing_key is not None:
        found.append(MailgunEndpoint(config.mailgun_signing_key, intake, replays))
    if config.postmark is not None:
        found.append(PostmarkEndpoint(*config.postmark, intake))
    if config.dsn_token is not None:
        found.append(DsnEndpoint(config.dsn_token, intake))
    return found


def webhook_dispatcher(
    config: WebhookConfig, db: Database, notifier: Notifier
) -> WebhookDispatcher:
    """The route over ``db`` (closed with the dispatcher): callbacks a report enqueues are
    handed to ``notifier`` at once (beat re-drives any it drops)."""
    ledger = PgReportLedger(db)
    intake = ReportIntake(ledger, SuppressionStore(db), notifier, count_report)
    return WebhookDispatcher(endpoints(config, intake, ledger), count=count_webhook, close=db.close)
