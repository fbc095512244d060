"""The sandbox relay (relays/sandbox.py): outcomes picked by the recipient's local part, the
soft bounce remembered per Message-ID (bounded), complaint reports handed over later."""

from __future__ import annotations

import threading
import time

import pytest

from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.relays.router import Relay, RelayRouter
from email_worker.relays.sandbox import ACCEPTED, SandboxRelay, simulated
from schemas.failures import (
    AmbiguousDelivery,
    PermanentFailure,
    Reason,
    TransientFailure,
    WorkerFailure,
)


def email(
    recipient: str, message_id: str = "<m1@example.com>", subject: str = "Hi"
) -> OutgoingEmail:
    return OutgoingEmail(
        sender="noreply@example.com",
        recipient=recipient,
        message_id=message_id,
        content=RenderedEmail(subject, "<p>Hi</p>", "Hi", "welcome", "v1"),
    )


@pytest.mark.parametrize(
    ("recipient", "outcome"),
    [
        ("bounce@example.com", "bounce"),
        ("Bounce+42@example.com", "bounce"),
        ("softbounce@example.com", "softbounce"),
        ("complaint@example.com", "complaint"),
        ("timeout@example.com", "timeout"),
        ("ann@example.com", "accept"),
        ("bounced@example.com", "accept"),
        ("ann@bounce.example.com", "accept"),
    ],
)
def test_the_local_part_picks_the_outcome(recipient: str, outcome: str) -> None:
    assert simulated(recipient) == outcome


def failure_of(relay: SandboxRelay, message: OutgoingEmail) -> WorkerFailure:
    with pytest.raises(WorkerFailure) as raised:
        relay.send(message)
    return raised.value


def test_each_outcome_is_what_a_relay_would_say() -> None:
    relay = SandboxRelay()
    assert relay.send(email("ann@example.com")) == ACCEPTED
    bounce = failure_of(relay, email("bounce@example.com"))
    assert type(bounce) is PermanentFailure
    assert (bounce.reason, bounce.detail) == (Reason.RECIPIENT_REJECTED, "550 5.1.1 at RCPT")
    timeout = failure_of(relay, email("timeout@example.com"))
    assert type(timeout) is AmbiguousDelivery and timeout.reason is Reason.SMTP_UNKNOWN


def test_a_soft_bounce_is_451_once_per_message_then_accepted() -> None:
    relay = SandboxRelay()
    first = failure_of(relay, email("softbounce@example.com", "<a@x>"))
    assert type(first) is TransientFailure and first.detail == "451 4.3.0 at RCPT"
    other = failure_of(relay, email("softbounce@example.com", "<b@x>"))  # its own first time
    assert isinstance(other, TransientFailure)
    assert relay.send(email("softbounce@example.com", "<a@x>")) == ACCEPTED
    assert relay.send(email("softbounce@example.com", "<b@x>")) == ACCEPTED


def test_the_soft_bounce_memory_is_bounded() -> None:
    relay = SandboxRelay(memory=2)
    for n in range(3):
        failure_of(relay, email("softbounce@example.com", f"<{n}@x>"))
    assert relay.send(email("softbounce@example.com", "<2@x>")) == ACCEPTED
    # The oldest was forgotten: it gets its 451 again (then would be accepted).
    assert isinstance(failure_of(relay, email("softbounce@example.com", "<0@x>")), TransientFailure)


def test_unsafe_content_fails_as_it_would_on_a_real_relay() -> None:
    failure = failure_of(SandboxRelay(), email("ann@example.com", subject="Hi\r\nBcc: x@y"))
    assert type(failure) is PermanentFailure and failure.reason is Reason.UNSAFE_CONTENT


def test_a_complaint_is_accepted_then_reported_later() -> None:
    reported: list[tuple[str, str]] = []
    arrived = threading.Event()

    def sink(message_id: str, recipient: str) -> None:
        reported.append((message_id, recipient))
        arrived.set()

    relay = SandboxRelay(complaints=sink, complaint_delay=0.05)
    assert relay.send(email("complaint@example.com", "<c@x>")) == ACCEPTED
    assert arrived.wait(5)
    assert reported == [("<c@x>", "complaint@example.com")]
    relay.close()


def test_a_failing_intake_does_not_stop_later_reports(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    done = threading.Event()

    def sink(message_id: str, recipient: str) -> None:
        calls.append(message_id)
        if len(calls) == 1:
            raise RuntimeError("intake down")
        done.set()

    relay = SandboxRelay(complaints=sink, complaint_delay=0.0)
    with caplog.at_level("ERROR", logger="email_worker.relays.sandbox"):
        relay.send(email("complaint@example.com", "<1@x>"))
        relay.send(email("complaint@example.com", "<2@x>"))
        assert done.wait(5)
    relay.close()
    assert calls == ["<1@x>", "<2@x>"]
    assert [r.getMessage() for r in caplog.records] == [
        "sandbox: the complaint report intake failed"
    ]


def test_without_an_intake_a_log_line_says_a_report_would_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = SandboxRelay(complaint_delay=0.0)
    with caplog.at_level("INFO", logger="email_worker.relays.sandbox"):
        relay.send(email("complaint@example.com", "<c@x>"))
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    relay.close()
    (record,) = caplog.records
    assert "complaint report would arrive" in record.getMessage()
    assert "complaint@example.com" not in record.getMessage()


def test_behind_the_router_the_sandbox_is_the_relay_named_sandbox() -> None:
    sandbox = SandboxRelay()
    counted: list[tuple[str, str]] = []
    router = RelayRouter(
        [Relay(sandbox.name, sandbox)],
        fail_max=1,
        reset_seconds=30,
        observe=lambda relay, outcome: counted.append((relay, outcome)),
    )
    sent = router.send(email("ann@example.com"))
    assert (sent.relay, sent.reply) == ("sandbox://", "250 2.0.0 sandbox")
    with pytest.raises(AmbiguousDelivery) as ambiguous:
        router.send(email("timeout@example.com"))
    assert ambiguous.value.relay == "sandbox://"
    assert counted == [("sandbox://", "sent"), ("sandbox://", "unknown")]
