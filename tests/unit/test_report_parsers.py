"""Each provider's documented payloads normalised to one vocabulary: which events are reports,
of which kind, with which ids; details short and address-free."""

from __future__ import annotations

import json
from typing import Any

import pytest

from email_worker.reports.dsn import mime_reports
from email_worker.reports.mailgun import mailgun_reports, parse_mailgun
from email_worker.reports.model import Kind, Malformed, Report, address, enhanced_code, message_id
from email_worker.reports.postmark import postmark_reports
from email_worker.reports.sendgrid import sendgrid_reports
from email_worker.reports.ses import (
    parse_sns,
    ses_reports,
    sns_certificate_url,
    string_to_sign,
)
from tests.support import webhook_payloads as p
from tests.support import webhooks as w

ADA, MID = "ada@example.org", "<3f2a9c@acme.test>"


def _kinds(reports: list[Report]) -> list[str]:
    return [report.kind.value for report in reports]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rfc822; Ada@Example.ORG", ADA),
        ("<ada@example.org>", ADA),
        (" ada@EXAMPLE.org ", ADA),
        ("not an address", None),
        ("a@b@c", None),
        (42, None),
        ("x" * 500 + "@example.org", None),
    ],
)
def test_addresses_are_normalised_or_refused(value: object, expected: str | None) -> None:
    assert address(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3f2a9c@acme.test", MID),  # Mailgun drops the angle brackets
        (f" {MID}", MID),  # SES's commonHeaders example has a leading space
        ("<a b@c>", None),
        ("<no-at-sign>", None),
        ("<é@x>", None),
        (None, None),
    ],
)
def test_message_ids_take_their_bracketed_form(value: object, expected: str | None) -> None:
    assert message_id(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp; 550 5.1.1 <a@b>: user unknown", "5.1.1"),
        ("4.4.7 (delivery time expired)", "4.4.7"),
        ("5.1.1.", "5.1.1"),
        ("version 10.5.1.1", None),
        ("5.1.1.2", None),
        ("3.1.1", None),
        (None, None),
    ],
)
def test_enhanced_status_codes(value: object, expected: str | None) -> None:
    assert enhanced_code(value) == expected


def test_a_report_summary_carries_no_address() -> None:
    signed = w.sns_notification(w.SnsSigner(), w.ses_bounce(ADA, MID))
    (report,) = ses_reports(parse_sns(signed.body).fields["Message"])
    assert "ada@" not in report.summary and report.summary.startswith("5.1.1 smtp; 550")
    assert len(report.summary) <= 160


# --- SES ----------------------------------------------------------------------------------


def test_the_sns_string_to_sign_is_the_documented_one() -> None:
    body = json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:t",
            "Subject": "S",
            "Message": "line 1\nline 2",
            "Timestamp": "2026-01-31T04:37:04.321Z",
            "SignatureVersion": "1",
            "Signature": "c2ln",
        }
    ).encode()
    assert string_to_sign(parse_sns(body)) == (
        b"Message\nline 1\nline 2\nMessageId\nm-1\nSubject\nS\n"
        b"Timestamp\n2026-01-31T04:37:04.321Z\nTopicArn\narn:t\nType\nNotification\n"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (w.CERT_URL, True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", True),
        ("http://sns.us-east-2.amazonaws.com/SimpleNotificationService-1.pem", False),
        ("https://sns.us-east-2.amazonaws.com.evil.test/x.pem", False),
        ("https://evil.test/sns.us-east-2.amazonaws.com/x.pem", False),
        ("https://sns.us-east-2.amazonaws.com/", False),
        ("https://[", False),
        (None, False),
    ],
)
def test_only_an_sns_hosts_certificate_url_is_shown(url: str | None, shown: bool) -> None:
    assert sns_certificate_url(url) == (url if shown else None)


def test_ses_bounce_types_and_ids() -> None:
    hard = ses_reports(json.dumps(w.ses_bounce(ADA, MID)))
    assert _kinds(hard) == ["hard_bounce"]
    assert hard[0].message_ids == (MID,) and hard[0].address == ADA
    assert hard[0].provider_ids == ("000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",)
    for kind in ("Transient", "Undetermined"):
        document = w.ses_bounce(ADA, MID, bounce_type=kind, status="4.2.2")
        assert _kinds(ses_reports(json.dumps(document))) == ["soft_bounce"]


def test_ses_complaints_delivery_and_event_publishing() -> None:
    assert _kinds(ses_reports(json.dumps(w.ses_complaint(ADA, MID)))) == ["complaint"]
    delivery = w.ses_bounce(ADA, MID) | {"notificationType": "Delivery"}
    assert ses_reports(json.dumps(delivery)) == []
    published = w.ses_bounce(ADA, MID)
    published["eventType"] = published.pop("notificationType")  # event publishing's name
    assert _kinds(ses_reports(json.dumps(published))) == ["hard_bounce"]


def test_ses_several_recipients_and_unusable_ones() -> None:
    document = w.ses_bounce(ADA, MID)
    recipients = document["bounce"]["bouncedRecipients"]
    recipients += [{"emailAddress": "bob@example.org"}, {"emailAddress": "junk"}, "junk"]
    reports = ses_reports(json.dumps(document))
    assert [r.address for r in reports] == [ADA, "bob@example.org"]


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"Type": "Other"}', b'{"Type": "Notification"}', b"\xff", b"[" * 100000],
)
def test_sns_bodies_that_are_not_messages(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse_sns(body)


# --- SendGrid -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "fields", "kind"),
    [
        ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "500 unknown"}, "hard_bounce"),
        ("bounce", {"type": "blocked", "reason": "IP blocked"}, "soft_bounce"),
        ("dropped", {"reason": "Bounced Address"}, "hard_bounce"),
        ("dropped", {"reason": "Invalid"}, "hard_bounce"),
        ("dropped", {"reason": "Unsubscribed Address"}, "unsubscribe"),
        ("dropped", {"reason": "Spam Reporting Address"}, "complaint"),
        ("dropped", {"reason": "Expired"}, "soft_bounce"),
        ("spamreport", {}, "complaint"),
        ("unsubscribe", {}, "unsubscribe"),
        ("group_unsubscribe", {"asm_group_id": 10}, "unsubscribe"),
        ("delivered", {"response": "250 OK"}, None),
        ("open", {}, None),
    ],
)
def test_sendgrid_events(event: str, fields: dict[str, Any], kind: str | None) -> None:
    body = json.dumps([w.sendgrid_event(event, ADA, MID, **fields)]).encode()
    reports = sendgrid_reports(body)
    assert _kinds(reports) == ([kind] if kind else [])
    if reports:
        assert reports[0].message_ids == (MID,)
        assert reports[0].provider_ids == (
            "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "14c5d75ce93",
        )


@pytest.mark.parametrize("body", [b"{}", b"[1]", b"nope", json.dumps([{}] * 5001).encode()])
def test_sendgrid_bodies_that_are_not_batches(body: bytes) -> None:
    with pytest.raises(Malformed):
        sendgrid_reports(body)


# --- Mailgun ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (p.mailgun_failed(ADA, MID, "permanent"), "hard_bounce"),
        (p.mailgun_failed(ADA, MID, "temporary"), "soft_bounce"),
        (p.mailgun_failed(ADA, MID) | {"event": "complained"}, "complaint"),
        (p.mailgun_failed(ADA, MID) | {"event": "unsubscribed"}, "unsubscribe"),
        (p.mailgun_failed(ADA, MID) | {"event": "delivered"}, None),
    ],
)
def test_mailgun_events(event: dict[str, Any], kind: str | None) -> None:
    reports = mailgun_reports(event)
    assert _kinds(reports) == ([kind] if kind else [])
    if reports:
        assert reports[0].message_ids == (MID,)


def test_mailgun_signature_blocks() -> None:
    post = parse_mailgun(p.mailgun_post("k", p.mailgun_failed(ADA, MID), 1700000000).body)
    assert post.signature.timestamp == "1700000000" and len(post.signature.token) == 50
    numeric = {"signature": {"timestamp": 17, "token": "t", "signature": "s"}, "event-data": {}}
    assert parse_mailgun(json.dumps(numeric).encode()).signature.timestamp == "17"
    for block in ({"timestamp": "1e3", "token": "t", "signature": "s"}, {"timestamp": "1"}):
        with pytest.raises(Malformed):
            parse_mailgun(json.dumps({"signature": block, "event-data": {}}).encode())


# --- Postmark -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        (p.postmark_bounce(ADA), "hard_bounce"),
        (p.postmark_bounce(ADA, "BadEmailAddress", 100000), "hard_bounce"),
        (p.postmark_bounce(ADA, "SoftBounce", 4096), "soft_bounce"),
        (p.postmark_bounce(ADA, "Transient", 2), "soft_bounce"),
        (p.postmark_bounce(ADA, "AutoResponder", 64), None),
        (
            p.postmark_bounce(ADA) | {"RecordType": "SpamComplaint", "Type": "SpamComplaint"},
            "complaint",
        ),
        (p.postmark_bounce(ADA) | {"RecordType": "Delivery"}, None),
    ],
)
def test_postmark_bounces(document: dict[str, Any], kind: str | None) -> None:
    reports = postmark_reports(json.dumps(document).encode())
    assert _kinds(reports) == ([kind] if kind else [])
    if reports:
        assert reports[0].provider_ids == ("883953f4-6105-42a2-a16a-77a8eac79483",)


def _change(reason: str | None, origin: str = "Recipient", suppress: bool = True) -> bytes:
    return json.dumps(
        {
            "RecordType": "SubscriptionChange",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "ServerID": 123456,
            "MessageStream": "outbound",
            "ChangedAt": "2026-02-01T10:53:34.416071Z",
            "Recipient": ADA,
            "Origin": origin,
            "SuppressSending": suppress,
            "SuppressionReason": reason,
            "Tag": "my-tag",
            "Metadata": {"example": "value"},
        }
    ).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (_change("HardBounce"), "hard_bounce"),
        (_change("SpamComplaint"), "complaint"),
        (_change("ManualSuppression"), "unsubscribe"),
        (_change("ManualSuppression", origin="Customer"), None),
        (_change(None, suppress=False), None),  # a reactivation
    ],
)
def test_postmark_subscription_changes(body: bytes, kind: str | None) -> None:
    assert _kinds(postmark_reports(body)) == ([kind] if kind else [])


# --- RFC 3464 / RFC 5965 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action", "kind"),
    [
        ("5.1.1", "failed", "hard_bounce"),
        ("4.2.2", "failed", "soft_bounce"),
        ("4.4.1", "delayed", None),
        ("2.0.0", "delivered", None),
    ],
)
def test_dsn_recipients(status: str, action: str, kind: str | None) -> None:
    reports = mime_reports(p.dsn(ADA, MID, status=status, action=action))
    assert _kinds(reports) == ([kind] if kind else [])
    if reports:
        assert reports[0].message_ids == (MID,) and reports[0].address == ADA
        assert reports[0].code == status and "ada@" not in reports[0].detail


@pytest.mark.parametrize(
    ("feedback", "kind"), [("abuse", "complaint"), ("fraud", "complaint"), ("not-spam", None)]
)
def test_arf_reports(feedback: str, kind: str | None) -> None:
    reports = mime_reports(p.arf(MID, feedback_type=feedback))
    assert _kinds(reports) == ([kind] if kind else [])
    if reports:
        assert reports[0].message_ids == (MID,)
        assert reports[0].address is None  # redacted, as ISPs do (RFC 6590)
    if kind:
        assert mime_reports(p.arf(MID, recipient=ADA))[0].address == ADA


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: hi\r\n\r\nplain mail",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x--",
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n"
        b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nread\r\n--x--",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 40,
    ],
)
def test_mime_bodies_that_are_not_reports(raw: bytes) -> None:
    with pytest.raises(Malformed):
        mime_reports(raw)


def test_kinds_cover_the_vocabulary() -> None:
    assert {kind.value for kind in Kind} == {
        "hard_bounce",
        "soft_bounce",
        "complaint",
        "unsubscribe",
    }
