"""The relay router (relays/router.py, relays/failover.py) over scripted transports: the
failover decision table, breakers that rest and probe a relay, weights, what a send that no
relay took raises, throttling routes, and what is counted."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.relays.breaker import Health
from email_worker.relays.failover import RESULTS, fails_over, health, result
from email_worker.relays.router import Relay, RelayRouter
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    TransientFailure,
    WorkerFailure,
)
from tests.fakes import FakeRelay

EMAIL = OutgoingEmail(
    sender="noreply@example.com",
    recipient="ann@example.org",
    message_id="<abc@example.com>",
    content=RenderedEmail("Hi", "<p>Hi</p>", "Hi", "welcome", "v1"),
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def down(detail: str = "connect failed: ConnectionRefusedError") -> RelayUnavailable:
    return RelayUnavailable(Reason.SMTP_UNAVAILABLE, detail)


class World:
    def __init__(
        self, *transports: FakeRelay, weights: list[int | None] | None = None, fail_max: int = 2
    ) -> None:
        self.clock = Clock()
        self.counted: list[tuple[str, str]] = []
        names = ["smtp://a:25", "smtp://b:25", "smtp://c:25"][: len(transports)]
        weights = weights or [None] * len(transports)
        self.router = RelayRouter(
            [Relay(n, t, w) for n, t, w in zip(names, transports, weights, strict=True)],
            fail_max=fail_max,
            reset_seconds=30,
            observe=lambda relay, outcome: self.counted.append((relay, outcome)),
            clock=self.clock,
        )

    def send(self) -> str:
        return self.router.send(EMAIL).relay

    def failure(self) -> WorkerFailure:
        with pytest.raises(WorkerFailure) as raised:
            self.router.send(EMAIL)
        return raised.value


# --- the decision table ---------------------------------------------------------------------

TABLE: list[tuple[str, WorkerFailure, bool, Health, str]] = [
    ("refused", down(), True, Health.FAILED, "unavailable"),
    ("421 greeting", down("421 at connect"), True, Health.FAILED, "unavailable"),
    ("lost at RCPT", down("connection lost at RCPT"), True, Health.FAILED, "unavailable"),
    (
        "lost in DATA, before the dot",
        down("connection lost in DATA"),
        True,
        Health.FAILED,
        "unavailable",
    ),
    (
        "TLS refused",
        SystemicFailure(Reason.SMTP_TLS_FAILED, "certificate verification failed"),
        True,
        Health.FAILED,
        "unavailable",
    ),
    (
        "AUTH refused",
        SystemicFailure(Reason.SMTP_AUTH_FAILED, "535 at AUTH"),
        True,
        Health.FAILED,
        "unavailable",
    ),
    (
        "lost after the dot",
        AmbiguousDelivery(Reason.SMTP_UNKNOWN, "no reply after end of DATA"),
        False,
        Health.FAILED,
        "unknown",
    ),
    (
        "550 at RCPT",
        PermanentFailure(Reason.RECIPIENT_REJECTED, "550 5.1.1 at RCPT"),
        False,
        Health.HEALTHY,
        "rejected",
    ),
    (
        "554 at DATA",
        PermanentFailure(Reason.MESSAGE_REJECTED, "554 5.6.0 at end of DATA"),
        False,
        Health.HEALTHY,
        "rejected",
    ),
    (
        "451 at RCPT",
        TransientFailure(Reason.SMTP_TRANSIENT, "451 4.3.0 at RCPT"),
        False,
        Health.HEALTHY,
        "transient",
    ),
    (
        "451 at DATA",
        TransientFailure(Reason.SMTP_TRANSIENT, "451 4.3.0 at end of DATA"),
        False,
        Health.HEALTHY,
        "transient",
    ),
    (
        "throttled",
        ThrottledFailure("relay", "421 4.7.0 at MAIL"),
        False,
        Health.HEALTHY,
        "throttled",
    ),
    (
        "pool full",
        DeferredFailure(Reason.SMTP_UNAVAILABLE, "no SMTP connection free within 5 s"),
        False,
        Health.NEUTRAL,
        "deferred",
    ),
    (
        "unsafe content",
        PermanentFailure(Reason.UNSAFE_CONTENT, "CR in Subject"),
        False,
        Health.NEUTRAL,
        "rejected",
    ),
]
IDS = [row[0] for row in TABLE]


@pytest.mark.parametrize(("label", "failure", "over", "verdict", "label_"), TABLE, ids=IDS)
def test_the_decision_table(
    label: str, failure: WorkerFailure, over: bool, verdict: Health, label_: str
) -> None:
    assert (fails_over(failure), health(failure), result(failure)) == (over, verdict, label_)
    assert label_ in RESULTS


@pytest.mark.parametrize(("label", "failure", "over", "verdict", "label_"), TABLE, ids=IDS)
def test_a_failure_reaches_the_next_relay_only_when_nothing_was_accepted(
    label: str, failure: WorkerFailure, over: bool, verdict: Health, label_: str
) -> None:
    a, b = FakeRelay(failure), FakeRelay()
    world = World(a, b)
    if over:
        assert world.send() == "smtp://b:25"
        assert world.counted == [("smtp://a:25", "unavailable"), ("smtp://b:25", "sent")]
    else:
        assert world.failure() is failure and failure.relay == "smtp://a:25"
        assert world.counted == [("smtp://a:25", label_)]
    assert (a.sends, b.sends) == (1, 1 if over else 0)


def test_no_failure_ever_reaches_a_third_relay_after_the_second_answered() -> None:
    refusal = PermanentFailure(Reason.RECIPIENT_REJECTED, "550 5.1.1 at RCPT")
    a, b, c = FakeRelay(down()), FakeRelay(refusal), FakeRelay()
    world = World(a, b, c)
    assert world.failure() is refusal and refusal.relay == "smtp://b:25"
    assert c.sends == 0


# --- breakers: rest, probe, recover ---------------------------------------------------------


def test_a_failing_relay_rests_is_probed_and_takes_traffic_again() -> None:
    a, b = FakeRelay(down(), down(), down()), FakeRelay()
    world = World(a, b, fail_max=2)
    assert [world.send() for _ in range(2)] == ["smtp://b:25"] * 2  # A failed twice: it rests
    assert world.router.breaker_states()["smtp://a:25"] == "open"
    assert [world.send() for _ in range(3)] == ["smtp://b:25"] * 3
    assert a.sends == 2  # resting: not even tried
    world.clock.now += 30
    assert world.send() == "smtp://b:25"  # the trial failed (A is still down): B took it
    assert a.sends == 3 and world.router.breaker_states()["smtp://a:25"] == "open"
    world.clock.now += 30
    assert world.send() == "smtp://a:25"  # A recovered: the trial succeeds
    assert [world.send() for _ in range(3)] == ["smtp://a:25"] * 3
    assert world.router.breaker_states() == {"smtp://a:25": "closed", "smtp://b:25": "closed"}


def test_weights_split_the_traffic_and_a_resting_relay_gives_its_share_away() -> None:
    a, b = FakeRelay(), FakeRelay()
    world = World(a, b, weights=[3, 1])
    assert Counter(world.send() for _ in range(400)) == {"smtp://a:25": 300, "smtp://b:25": 100}
    a.script = [down(), down()]
    for _ in range(2):
        world.send()
    assert Counter(world.send() for _ in range(100)) == {"smtp://b:25": 100}


def test_a_weight_zero_relay_is_a_backup() -> None:
    a, b, backup = FakeRelay(), FakeRelay(), FakeRelay()
    world = World(a, b, backup, weights=[1, 1, 0])
    assert {world.send() for _ in range(20)} == {"smtp://a:25", "smtp://b:25"}
    a.script, b.script = [down()] * 3, [down()] * 3
    assert {world.send() for _ in range(6)} == {"smtp://c:25"}


# --- when no relay takes it ---------------------------------------------------------------


def test_one_relay_down_fails_as_before_then_defers_while_it_rests() -> None:
    first = down()
    a = FakeRelay(first, down(), down())
    world = World(a, fail_max=2)
    assert world.failure() is first  # as today: a transient failure, an attempt spent
    assert type(first) is RelayUnavailable and first.relay == "smtp://a:25"
    world.failure()
    resting = world.failure()
    assert type(resting) is DeferredFailure and resting.reason is Reason.SMTP_UNAVAILABLE
    assert "smtp://a:25" in resting.detail and a.sends == 2  # no attempt: not even tried


def test_tls_or_auth_refused_everywhere_pauses_even_while_the_relays_rest() -> None:
    auth = SystemicFailure(Reason.SMTP_AUTH_FAILED, "535 at AUTH")
    tls = SystemicFailure(Reason.SMTP_TLS_FAILED, "certificate verification failed")
    world = World(FakeRelay(auth, auth), FakeRelay(tls, tls), fail_max=2)
    assert world.failure() is tls
    assert world.failure() is tls
    resting = world.failure()
    assert type(resting) is SystemicFailure and resting.reason is Reason.SMTP_TLS_FAILED


def test_auth_refused_on_one_relay_only_does_not_pause() -> None:
    auth = SystemicFailure(Reason.SMTP_AUTH_FAILED, "535 at AUTH")
    refused = down()
    world = World(FakeRelay(auth), FakeRelay(refused))
    assert world.failure() is refused  # one relay merely down: transient, not a pause
    world = World(FakeRelay(refused), FakeRelay(auth))
    assert world.failure() is refused


# --- throttling, counting, logging ----------------------------------------------------------


def test_a_throttling_answer_slows_that_relay_only() -> None:
    relay_said = ThrottledFailure("relay", "421 4.7.0 at MAIL", retry_after=5)
    domain_said = ThrottledFailure("domain:example.org", "451 4.7.1 at RCPT")
    world = World(FakeRelay(relay_said, domain_said), FakeRelay())
    assert world.failure() is relay_said and relay_said.route == "relay:smtp://a:25"
    assert world.failure() is domain_said and domain_said.route == "domain:example.org"


def test_a_bug_in_a_transport_propagates_and_says_nothing_of_the_relay() -> None:
    class Broken(FakeRelay):
        def send(self, email: OutgoingEmail) -> str:
            raise KeyError("bug")

    world = World(Broken(), FakeRelay())
    with pytest.raises(KeyError):
        world.router.send(EMAIL)
    assert world.router.breaker_states()["smtp://a:25"] == "closed"


def test_failover_is_logged_by_relay_name_and_close_closes_every_transport(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = FakeRelay(down()), FakeRelay()
    world = World(a, b)
    with caplog.at_level(logging.WARNING, logger="email_worker.relays.router"):
        world.send()
    (record,) = caplog.records
    assert record.__dict__["relay"] == "smtp://a:25"
    assert record.__dict__["reason"] == "smtp_unavailable"
    world.router.close()
    assert a.closed and b.closed


def test_a_router_needs_a_relay() -> None:
    with pytest.raises(ValueError):
        RelayRouter([], fail_max=1, reset_seconds=1)
