"""Envelope mailboxes, DATA framing and reply classification (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.smtp.wire import accepted_reply, classify, dot_stuffed, mailbox
from schemas.failures import (
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
    WorkerFailure,
)


def test_mailbox_is_the_bare_address_in_angle_brackets() -> None:
    assert mailbox("ann@example.test") == "<ann@example.test>"
    assert mailbox("Acme <notify@acme.test>") == "<notify@acme.test>"


def test_dot_stuffing_doubles_leading_dots_and_ends_with_the_final_dot() -> None:
    assert dot_stuffed(b"a\r\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuffed(b"done\r\n") == b"done\r\n.\r\n"
    assert dot_stuffed(b".first\r\n") == b"..first\r\n.\r\n"


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"a"])).map(b"".join))
def test_dot_stuffing_doubles_a_dot_wherever_a_line_starts(payload: bytes) -> None:
    expected = re.sub(rb"(?m)^\.", b"..", payload)  # what it did with a regular expression
    expected += b"" if expected.endswith(b"\r\n") else b"\r\n"

    assert dot_stuffed(payload) == expected + b".\r\n"


def test_the_expected_reply_or_any_2xx_is_success() -> None:
    classify(250, b"2.1.0 ok", "MAIL")
    classify(354, b"go ahead", "DATA", expect=354)


@pytest.mark.parametrize(
    ("code", "phase", "expect", "kind", "reason"),
    [
        (451, "RCPT", None, TransientFailure, Reason.SMTP_TRANSIENT),
        (550, "RCPT", None, PermanentFailure, Reason.RECIPIENT_REJECTED),
        (554, "end of DATA", None, PermanentFailure, Reason.MESSAGE_REJECTED),
        (535, "MAIL", None, SystemicFailure, Reason.SMTP_AUTH_FAILED),
        (250, "DATA", 354, TransientFailure, Reason.SMTP_TRANSIENT),  # makes no sense here
        (503, "DATA", 354, PermanentFailure, Reason.MESSAGE_REJECTED),
    ],
)
def test_failures_are_classified_by_code_and_phase(
    code: int, phase: str, expect: int | None, kind: type[WorkerFailure], reason: Reason
) -> None:
    with pytest.raises(WorkerFailure) as caught:
        classify(code, b"5.1.1 <ann@example.test> no such user", phase, expect)

    assert type(caught.value) is kind and caught.value.reason is reason
    assert caught.value.detail.startswith(f"{code} ") and caught.value.detail.endswith(phase)
    assert "ann" not in caught.value.detail


def test_the_stored_reply_masks_addresses_on_one_line() -> None:
    reply = accepted_reply(250, b"2.0.0 queued for <ann@example.test>\nas 12AB")

    assert reply == "250 2.0.0 queued for [address] as 12AB"
