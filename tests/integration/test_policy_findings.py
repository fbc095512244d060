"""Minimal reproductions of what the delivery-policy fault tests (``test_faults_policy.py``)
found, each on the shared services with one in-process worker. A strict xfail marks a bug not
fixed yet: once it is fixed pytest says so (XPASS(strict) fails) and the marker goes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.policy_mix import VARIABLES
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_a_throttled_delivery_spends_no_attempt(stack: Stack) -> None:
    # The ledger and the callback counted each throttling deferral as an attempt (CONTRACT
    # "Attempts"); fixed by migration 011_spent_attempts.
    key = f"throttled-{uuid.uuid4().hex[:8]}"
    address = f"{key}@example.com"
    stack.smtp.script(address, Behaviour(data="451 4.7.1 too many messages, slow down"))
    stack.start_worker(callback_field_names="attempts:attempts")
    stack.publish(
        {"request_id": key, "template_code": "welcome", "to_email": address, "variables": VARIABLES}
    )
    wait_for(lambda: [c["status"] for c in stack.callbacks(key)] == ["delivered"], 20, "it")
    reasons = stack.query("SELECT reason FROM email_events WHERE request_id = %s", key)
    assert {"reason": "throttled"} in reasons  # it was throttled, then delivered
    (row,) = stack.query("SELECT attempts FROM email_requests WHERE request_id = %s", key)
    assert (row["attempts"], stack.callbacks(key)[0]["attempts"]) == (1, 1)


def test_a_send_at_less_than_a_second_ahead_is_not_sent_before_it(stack: Stack) -> None:
    key = f"soon-{uuid.uuid4().hex[:8]}"
    address = f"{key}@example.com"
    stack.start_worker()
    send_at = datetime.now(UTC) + timedelta(seconds=0.8)
    send_at = send_at.replace(microsecond=send_at.microsecond // 1000 * 1000)  # as sent
    stack.publish(
        {
            "request_id": key,
            "template_code": "welcome",
            "to_email": address,
            "variables": VARIABLES,
            "send_at": send_at.isoformat(timespec="milliseconds"),
        }
    )
    wait_for(lambda: bool(stack.emails_to(address)), 20, "the email")
    (email,) = stack.emails_to(address)
    assert email.received_at >= send_at.timestamp()  # by the relay's clock
