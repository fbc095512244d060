"""Bounce and complaint intake through the whole worker on real RabbitMQ, Postgres, SMTP and
its own HTTP port: every provider's signed report suppresses and its tampered twin changes
nothing; a report about a delivered request turns it ``bounced`` (status API and ledger) and
the gateway receives the ``failed`` callback after the ``delivered`` one; a soft bounce only
counts; the next message to a bounced address is suppressed. No address in any log record."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore
from tests.support import webhook_payloads as p
from tests.support import webhooks as w
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

MAILGUN_KEY, POSTMARK, DSN_TOKEN = "key-mg-0123456789", ("hooks", "pm s3cret"), "dsn-t0ken-xyz"
STATUS_TOKEN = "status-token"
POSTMARK_ID = "883953f4-6105-42a2-a16a-77a8eac79483"  # the MessageID of w.postmark_bounce


class Records(logging.Handler):
    """Every log record of the worker's own loggers, raw (before any scrubbing), as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("email_worker"):
            fields = " ".join(f"{key}={value}" for key, value in vars(record).items())
            self.lines.append(f"{record.getMessage()} {fields}")


@pytest.fixture
def records() -> Iterator[Records]:
    handler, root = Records(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Intake:
    stack: Stack
    port: int
    sns: w.SnsSigner
    sendgrid: w.SendGridSigner
    store: SuppressionStore

    def send(self, address: str) -> tuple[str, str]:
        """One message delivered (and its ``delivered`` callback received): (request_id,
        Message-ID)."""
        request_id = f"wh-{uuid.uuid4().hex[:12]}"
        self.stack.publish(
            {
                "request_id": request_id,
                "template_code": "welcome",
                "to_email": address,
                "variables": {"name": "Ada", "link": "https://example.com/start"},
            }
        )
        wait_for(lambda: self.stack.status(request_id) == "sent", 20, "the delivery")
        wait_for(lambda: self.statuses(request_id) == ["delivered"], 20, "the callback")
        row = self.stack.query(
            "SELECT message_id FROM email_requests WHERE request_id = %s", request_id
        )
        return request_id, str(row[0]["message_id"])

    def statuses(self, request_id: str) -> list[str]:
        return [callback["status"] for callback in self.stack.callbacks(request_id)]

    def api_status(self, request_id: str) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/notifications/{request_id}",
            headers={"Authorization": f"Bearer {STATUS_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["data"]["status"])

    def metric(self, provider: str, kind: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        wanted = f'email_worker_reports_total{{kind="{kind}",provider="{provider}"}} '
        found = [line for line in text.splitlines() if line.startswith(wanted)]
        return float(found[0].split()[-1]) if found else 0.0


@pytest.fixture
def intake(stack: Stack, tmp_path: Path) -> Iterator[Intake]:
    sns, sendgrid = w.SnsSigner(), w.SendGridSigner()
    certificate = tmp_path / "sns.pem"
    certificate.write_bytes(sns.certificate_pem())
    port = free_port()
    stack.start_worker(
        http_port=port,
        status_api_token=STATUS_TOKEN,
        ses_sns_cert_file=certificate,
        sendgrid_webhook_public_key=sendgrid.public_key(),
        mailgun_webhook_signing_key=MAILGUN_KEY,
        postmark_webhook_username=POSTMARK[0],
        postmark_webhook_password=POSTMARK[1],
        dsn_webhook_token=DSN_TOKEN,
    )
    db = Database(stack.database_url, pool_size=1)
    try:
        yield Intake(stack, port, sns, sendgrid, SuppressionStore(db))
    finally:
        db.close()


def test_a_bounce_after_delivery_reaches_the_gateway_and_suppresses_the_next_message(
    intake: Intake, records: Records
) -> None:
    address = "gone.later@example.com"
    request_id, message_id = intake.send(address)
    status, body = w.post(
        intake.port, w.sns_notification(intake.sns, w.ses_bounce(address, message_id))
    )
    assert (status, body["tied"], body["suppressed"]) == (200, 1, 1)

    entry = intake.store.check(address)
    assert entry is not None and (entry.reason, entry.source) == ("hard_bounce", "ses")
    assert intake.stack.status(request_id) == "bounced"
    assert intake.api_status(request_id) == "bounced"
    wait_for(lambda: intake.statuses(request_id) == ["delivered", "failed"], 20, "the bounce")
    failed = intake.stack.callbacks(request_id)[-1]
    assert failed["error"].startswith("bounced: 5.1.1 smtp; 550 5.1.1")
    assert "gone.later@" not in failed["error"]
    events = intake.stack.query(
        "SELECT event, status FROM email_events WHERE request_id = %s ORDER BY id", request_id
    )
    assert events[-1] == {"event": "bounced", "status": "bounced"}

    # SNS delivers a notification more than once: the second changes nothing.
    again = w.post(intake.port, w.sns_notification(intake.sns, w.ses_bounce(address, message_id)))
    assert again[0] == 200
    outbox = intake.stack.query(
        "SELECT status FROM callback_outbox WHERE request_id = %s ORDER BY id", request_id
    )
    assert [row["status"] for row in outbox] == ["delivered", "failed"]

    # The next message to the address never reaches the relay.
    second = f"wh-{uuid.uuid4().hex[:12]}"
    rcpts = intake.stack.smtp.rcpt_count(address)
    intake.stack.publish({"request_id": second, "template_code": "welcome", "to_email": address})
    assert intake.stack.dead_letter(second).headers.failure_reason == "suppressed"
    assert intake.stack.smtp.rcpt_count(address) == rcpts
    assert_no_address_logged(records, address)


def _authentic(intake: Intake, provider: str, address: str, message_id: str) -> w.Signed:
    now = int(time.time())
    return {
        "ses": lambda: w.sns_notification(intake.sns, w.ses_complaint(address, message_id), "2"),
        "sendgrid": lambda: intake.sendgrid.post(
            [w.sendgrid_event("spamreport", address, message_id)], now
        ),
        "mailgun": lambda: p.mailgun_post(MAILGUN_KEY, p.mailgun_failed(address, message_id), now),
        "postmark": lambda: p.postmark_post(p.postmark_bounce(address), *POSTMARK),
        "dsn": lambda: p.dsn_post(p.dsn(address, message_id), DSN_TOKEN),
    }[provider]()


def _tampered(intake: Intake, provider: str, signed: w.Signed) -> w.Signed:
    if provider == "postmark":
        return signed.with_header("Authorization", "Basic aG9va3M6d3Jvbmc=")  # hooks:wrong
    if provider == "dsn":
        return signed.with_header("Authorization", "Bearer wrong")
    if provider == "mailgun":
        document = json.loads(signed.body)
        document["event-data"]["recipient"] = "victim@example.com"  # keeps the signature
        forged = p.mailgun_post("not-the-key", document["event-data"], int(time.time()))
        return forged
    return signed.with_body(signed.body.replace(b"example.com", b"example.net"))


PROVIDERS = {
    "ses": ("complaint", "complained"),
    "sendgrid": ("complaint", "complained"),
    "mailgun": ("hard_bounce", "bounced"),
    "postmark": ("hard_bounce", "bounced"),
    "dsn": ("hard_bounce", "bounced"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_signed_report_acts_and_its_tampered_twin_changes_nothing(
    intake: Intake, records: Records, provider: str
) -> None:
    address = f"{provider}.user@example.com"
    request_id, message_id = intake.send(address)
    if provider == "postmark":  # Postmark names its own id: as its relay would have recorded
        intake.stack.query(
            "UPDATE email_requests SET provider_message_id = %s WHERE request_id = %s"
            " RETURNING request_id",
            POSTMARK_ID,
            request_id,
        )
    signed = _authentic(intake, provider, address, message_id)

    status, body = w.post(intake.port, _tampered(intake, provider, signed))
    assert 400 <= status < 500 and body["status"] == "refused", body
    assert intake.store.check(address) is None and intake.store.check("victim@example.com") is None
    assert intake.stack.status(request_id) == "sent"
    assert intake.statuses(request_id) == ["delivered"]

    status, body = w.post(intake.port, signed)
    assert status == 200 and body["tied"] == 1, body
    reason, ledger_status = PROVIDERS[provider]
    entry = intake.store.check(address)
    assert entry is not None and (entry.reason, entry.source) == (reason, provider)
    assert intake.stack.status(request_id) == ledger_status
    wait_for(lambda: intake.statuses(request_id) == ["delivered", "failed"], 20, "the callback")
    assert intake.stack.callbacks(request_id)[-1]["error"].startswith(f"{ledger_status}: ")
    assert_no_address_logged(records, address)


def test_a_soft_bounce_changes_nothing_but_a_counter(intake: Intake, records: Records) -> None:
    address = "full.mailbox@example.com"
    request_id, message_id = intake.send(address)
    before = intake.metric("ses", "soft_bounce")
    soft = w.ses_bounce(address, message_id, bounce_type="Transient", status="4.2.2")
    status, body = w.post(intake.port, w.sns_notification(intake.sns, soft))
    assert (status, body["reports"], body["suppressed"], body["tied"]) == (200, 1, 0, 0)
    assert intake.metric("ses", "soft_bounce") == before + 1
    assert intake.store.check(address) is None
    assert intake.stack.status(request_id) == "sent"
    assert intake.statuses(request_id) == ["delivered"]
    assert_no_address_logged(records, address)


def test_a_raw_report_that_ties_to_none_of_our_messages_suppresses_nothing(
    intake: Intake,
) -> None:
    forged = p.dsn_post(p.dsn("stranger@example.com", "<guessed@acme.test>"), DSN_TOKEN)
    status, body = w.post(intake.port, forged)
    assert (status, body["reports"], body["tied"], body["suppressed"]) == (200, 1, 0, 0)
    assert intake.store.check("stranger@example.com") is None


def test_a_redacted_complaint_report_suppresses_the_address_its_message_went_to(
    intake: Intake,
) -> None:
    address = "complainer@example.com"
    request_id, message_id = intake.send(address)
    status, body = w.post(intake.port, p.dsn_post(p.arf(message_id), DSN_TOKEN))
    assert (status, body["tied"], body["suppressed"]) == (200, 1, 1)
    entry = intake.store.check(address)
    assert entry is not None and (entry.reason, entry.source) == ("complaint", "dsn")
    assert intake.api_status(request_id) == "complained"


def test_mailgun_replays_and_stale_timestamps_are_refused_for_good(intake: Intake) -> None:
    address = "mg.replay@example.com"
    _, message_id = intake.send(address)
    event = p.mailgun_failed(address, message_id)
    signed = p.mailgun_post(MAILGUN_KEY, event, int(time.time()))
    assert w.post(intake.port, signed)[0] == 200
    assert w.post(intake.port, signed) == (
        406,
        {"status": "refused", "error": "replayed", "message": "already received"},
    )
    stale = p.mailgun_post(MAILGUN_KEY, event, int(time.time()) - 10 * 3600)
    assert w.post(intake.port, stale)[1]["error"] == "stale"


def test_a_subscription_confirmation_is_answered_without_any_outbound_request(
    intake: Intake,
) -> None:
    seen = len(intake.stack.http.requests)
    status, body = w.post(intake.port, w.sns_confirmation(intake.sns))
    assert status == 200 and body["status"] == "not_confirmed"
    assert len(intake.stack.http.requests) == seen  # no GET of the SubscribeURL, anywhere


def test_endpoints_whose_setting_is_unset_answer_404(stack: Stack) -> None:
    port = free_port()
    stack.start_worker(http_port=port, dsn_webhook_token=DSN_TOKEN)
    signed = p.postmark_post(p.postmark_bounce("a@example.com"), *POSTMARK)
    assert w.post(port, signed)[0] == 404
    assert w.post(port, p.dsn_post(b"not a report", DSN_TOKEN))[0] == 400


def assert_no_address_logged(records: Records, *addresses: str) -> None:
    assert records.lines, "nothing was logged: the capture is broken"
    for address in addresses:
        local = address.partition("@")[0].lower()
        leaks = [line for line in records.lines if f"{local}@" in line.lower()]
        assert leaks == [], f"{address} appears in {len(leaks)} log record(s): {leaks[:1]}"
