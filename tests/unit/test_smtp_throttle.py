"""Which SMTP answers are throttling (CONTRACT section 12), and which route they slow: a table
of real relays' replies and near misses, and linear time on hostile replies (the shape of the
curve, ``tests.support.growth``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from email_worker.smtp.wire import classify, throttle_route
from schemas.failures import ThrottledFailure, TransientFailure, WorkerFailure
from tests.support.growth import assert_linear

THROTTLES = [
    # (code, reply text, phase, route)
    (421, b"4.7.0 rate limited", "end of DATA", "relay"),
    (421, b"Service not available, closing transmission channel", "MAIL", "relay"),
    (421, b"4.7.0 Try again later, closing connection. (RCPT)", "RCPT", "relay"),
    (421, b"4.7.28 Our system has detected an unusual rate of unsolicited mail", "RCPT", "relay"),
    (450, b"4.7.1 <a@example.com>: Recipient address rejected: rate limited", "RCPT", "domain"),
    (451, b"4.7.1 Please try again later", "RCPT", "domain"),
    (452, b"4.7.0 Too many emails to this domain", "RCPT", "domain"),
    (451, b"4.7.650 The mail server has been temporarily rate limited", "MAIL", "relay"),
    (450, b"Requested action aborted: too many messages", "end of DATA", "relay"),
    (451, b"Ratelimit exceeded for this account", "MAIL", "relay"),
    (452, b"4.3.1 Throttling: sending rate exceeded", "RCPT", "relay"),
    (454, b"Throttling failure: Maximum sending rate exceeded.", "end of DATA", "relay"),
    (454, b"Throttling failure: Daily message quota exceeded.", "MAIL", "relay"),
    (454, b"4.7.0 Temporary authentication failure", "MAIL", "relay"),
    (450, b"4.2.1 Peak SMTP relay limit exceeded for customer", "RCPT", "relay"),
]

NOT_THROTTLES = [
    (451, b"4.3.0 Error: queue file write error", "end of DATA"),
    (450, b"4.2.1 Mailbox busy", "RCPT"),
    (451, b"4.4.1 Unable to generate a delivery report", "end of DATA"),  # "generate" != "rate"
    (452, b"4.3.1 Insufficient system storage", "RCPT"),
    (454, b"4.3.0 TLS not available due to local problem", "MAIL"),
    (453, b"4.7.0 rate limited", "RCPT"),  # not one of the contract's codes
    (550, b"5.7.1 Too many complaints", "RCPT"),  # permanent: never a throttle
    (554, b"Throttling failure", "end of DATA"),
]


@pytest.mark.parametrize(("code", "reply", "phase", "route"), THROTTLES)
def test_throttling_answers_slow_their_route_and_keep_no_relay_text(
    code: int, reply: bytes, phase: str, route: str
) -> None:
    assert throttle_route(code, reply, phase) == route
    with pytest.raises(ThrottledFailure) as caught:
        classify(code, reply, phase)
    assert caught.value.route == route
    assert caught.value.detail.startswith(f"{code}") and caught.value.detail.endswith(phase)
    assert "@" not in caught.value.detail and "rate" not in caught.value.detail.lower()


@pytest.mark.parametrize(("code", "reply", "phase"), NOT_THROTTLES)
def test_other_answers_are_not_throttles(code: int, reply: bytes, phase: str) -> None:
    assert throttle_route(code, reply, phase) is None
    with pytest.raises(WorkerFailure) as caught:
        classify(code, reply, phase)
    assert not isinstance(caught.value, ThrottledFailure)
    if code < 500:
        assert isinstance(caught.value, TransientFailure)


HOSTILE = {
    "near misses": lambda n: b"4.3.0 " + b"xrat" * n + b"e",
    "repeated words": lambda n: b"too manyrate " * n,
    "leading spaces": lambda n: b" " * n + b"4.7",
    "enhanced-code lookalikes": lambda n: b"4.7." * n,
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_classifying_a_hostile_reply_is_linear(make: Callable[[int], bytes]) -> None:
    assert_linear(lambda reply: throttle_route(451, reply, "RCPT"), make, limit=1 << 18)
