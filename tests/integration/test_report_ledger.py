"""Migration 008 on a real Postgres: ``ew_record_report`` ties a report to its request by our
Message-ID or the provider's id, moves only a sent (or maybe sent) request, writes its event and
its ``failed`` callback after ``delivered`` with the dispatcher's ordering rules, and does it
once; the replay guard claims a token once until it expires."""

from __future__ import annotations

from typing import Any

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.reports import PgReportLedger
from email_worker.reports.intake import Intent
from email_worker.reports.model import Kind, Report

pytestmark = pytest.mark.integration

MID = "<3f2a9c@acme.test>"


def _rows(db: Database, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with db.transaction() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def _request(db: Database, status: str = "sent", **columns: Any) -> str:
    values = {
        "request_id": "req-1",
        "payload_hash": "h",
        "status": status,
        "notification_id": "n-1",
        "correlation_id": "c-1",
        "recipient": "ada@example.org",
        "message_id": MID,
    } | columns
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    _rows(db, f"INSERT INTO email_requests ({names}) VALUES ({marks})", *values.values())
    return str(values["request_id"])


def _callback(db: Database, status: str, state: str = "delivered", in_flight: bool = False) -> None:
    _rows(
        db,
        "INSERT INTO callback_outbox (webhook_id, request_id, notification_id, correlation_id,"
        " status, event_at, callback_url, state, in_flight_until)"
        " VALUES (%s, 'req-1', 'n-1', 'c-1', %s, now(), 'http://gw/status', %s,"
        " CASE WHEN %s THEN now() + interval '1 minute' END)",
        f"msg_{status}_{state}",
        status,
        state,
        in_flight,
    )


def _outbox(db: Database) -> list[tuple[str, str, str | None]]:
    return [
        (status, state, error)
        for status, state, error in _rows(
            db, "SELECT status, state, error FROM callback_outbox ORDER BY id"
        )
    ]


BOUNCE = Report(Kind.HARD_BOUNCE, "ada@example.org", "5.1.1", "smtp; 550 unknown", (MID,))


def test_a_delivered_request_turns_bounced_with_its_callback_after_delivered(db: Database) -> None:
    _request(db)
    _callback(db, "delivered")
    tied = PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1 smtp; 550 unknown")
    assert tied is not None and tied.changed and tied.recipient == "ada@example.org"
    assert _outbox(db) == [
        ("delivered", "delivered", None),
        ("failed", "pending", "bounced: 5.1.1 smtp; 550 unknown"),
    ]
    row = _rows(db, "SELECT status, failure_reason, failure_detail FROM email_requests")[0]
    assert row == ("bounced", "bounced", "5.1.1 smtp; 550 unknown")
    events = _rows(db, "SELECT event, status, reason FROM email_events")
    assert events == [("bounced", "bounced", "bounced")]
    # Again (providers retry): nothing more.
    again = PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1")
    assert again is not None and not again.changed and again.outbox_id is None
    assert len(_outbox(db)) == 2 and len(_rows(db, "SELECT 1 FROM email_events")) == 1


def test_an_unsent_delivered_callback_is_superseded_and_one_in_flight_is_not(
    db: Database,
) -> None:
    _request(db)
    _callback(db, "delivered", state="pending")
    PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1")
    assert [state for _, state, _ in _outbox(db)] == ["superseded", "pending"]


def test_a_callback_in_flight_is_left_to_land_first(db: Database) -> None:
    _request(db)
    _callback(db, "delivered", state="pending", in_flight=True)
    PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1")
    assert [state for _, state, _ in _outbox(db)] == ["pending", "pending"]


def test_an_unknown_send_loses_its_lease_and_retry_copy(db: Database) -> None:
    _request(
        db,
        "unknown",
        lease_owner="w-1",
        retry_due_at="2030-01-01T00:00:00Z",
        retry_body=b"copy",
    )
    tied = PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1")
    assert tied is not None and tied.changed and tied.outbox_id is None  # no URL ever known
    row = _rows(db, "SELECT status, lease_owner, retry_due_at, retry_body FROM email_requests")
    assert row == [("bounced", None, None, None)]


@pytest.mark.parametrize("status", ["failed", "pending", "sending", "complained"])
def test_a_request_not_sent_is_not_moved(db: Database, status: str) -> None:
    _request(db, status)
    tied = PgReportLedger(db).tie(BOUNCE, "bounced", "bounced: 5.1.1")
    assert tied is not None and not tied.changed
    assert _rows(db, "SELECT status FROM email_requests") == [(status,)]
    # Another kind of report is kept in the audit trail; the same kind is a retry.
    events = _rows(db, "SELECT event, status FROM email_events")
    assert events == ([("bounced", None)] if status != "bounced" else [])


def test_a_provider_id_ties_when_no_message_id_does(db: Database) -> None:
    _request(db, message_id=None, provider_message_id="pm-883953f4")
    report = Report(Kind.COMPLAINT, None, "abuse", "", ("<other@x>",), ("pm-883953f4",))
    tied = PgReportLedger(db).tie(report, "complained", "complained: abuse")
    assert tied is not None and tied.request_id == "req-1" and tied.changed
    nothing = Report(Kind.COMPLAINT, None, "", "", ("<other@x>",), ("pm-else",))
    assert PgReportLedger(db).tie(nothing, "complained", "complained") is None


def test_the_replay_guard_claims_once_and_forgets_on_request(db: Database) -> None:
    ledger = PgReportLedger(db)
    assert ledger.claim("mailgun", "token-1", 60) is True
    assert ledger.claim("mailgun", "token-1", 60) is False
    assert ledger.claim("sendgrid", "token-1", 60) is True  # per provider
    ledger.forget("mailgun", "token-1")
    assert ledger.claim("mailgun", "token-1", 60) is True
    stored = _rows(db, "SELECT key FROM webhook_replays")
    assert all(bytes(key) != b"token-1" and len(bytes(key)) == 32 for (key,) in stored)
    _rows(db, "UPDATE webhook_replays SET expires_at = now() - interval '1 second'")
    assert ledger.claim("postmark", "other", 60) is True  # prunes the expired keys on the way
    assert _rows(db, "SELECT provider FROM webhook_replays") == [("postmark",)]


def test_a_batch_spanning_chunks_is_kept_whole_or_not_at_all(db: Database) -> None:
    _request(db)
    _callback(db, "delivered")
    # A raw report tied to a request whose recipient cannot be suppressed fails the batch in
    # its second chunk (ValueError), after the first chunk's statements ran.
    _request(db, request_id="req-2", message_id="<odd@acme.test>", recipient="not an address")
    bounces = [
        Intent.of(Report(Kind.HARD_BOUNCE, f"u{n}@example.org", "5.1.1", "", (MID,)), True)
        for n in range(600)
    ]
    odd = Intent.of(Report(Kind.COMPLAINT, None, "abuse", "", ("<odd@acme.test>",)), False)
    with pytest.raises(ValueError):
        PgReportLedger(db).record("sendgrid", [*bounces, odd])
    assert _rows(db, "SELECT request_id, status FROM email_requests ORDER BY 1") == [
        ("req-1", "sent"),
        ("req-2", "sent"),
    ]
    assert _rows(db, "SELECT count(*) FROM suppressions") == [(0,)]
    assert _rows(db, "SELECT count(*) FROM email_events") == [(0,)]
    assert _outbox(db) == [("delivered", "delivered", None)]

    found = PgReportLedger(db).record("sendgrid", bounces)
    assert [tied is not None and tied.changed for tied in found] == [True] + [False] * 599
    assert found[0] is not None and found[0].outbox_id is not None
    assert _rows(db, "SELECT count(*), min(reason), min(source) FROM suppressions") == [
        (600, "hard_bounce", "sendgrid")
    ]
    assert _rows(db, "SELECT event FROM email_events") == [("bounced",)]
    assert _outbox(db) == [
        ("delivered", "delivered", None),
        ("failed", "pending", "bounced: 5.1.1"),
    ]
