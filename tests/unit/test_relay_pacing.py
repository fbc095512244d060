"""Per-relay pacing: the relay router (relays/router.py) waiting for the chosen relay's own route
``relay:<name>`` of the pacer (pacing/pacer.py), on a fake clock and the in-process store. A
throttled relay slows the sends through it only; a relay whose turn is further away than the
maximum wait passes the message to the next relay without a breaker failure or an attempt;
with no other relay the send is deferred as before; a relay's ``?rate=`` is its own ceiling;
a relay's wait never costs ``RATE_LIMIT`` its exactness (no stale slot, no push).

Each send goes as the pipeline sends it: ``wait_turn``, ``Mailer.send``, ``report``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from email_worker.disposition import Retry, RetryPolicy, decide
from email_worker.pacing import PacerConfig, RoutePacer, TurnRefused
from email_worker.pacing.memory import MemoryRateStore
from email_worker.pacing.store import Throttle
from email_worker.ports import OutgoingEmail
from email_worker.relays.router import SPILL_PATIENCE_SECONDS, Relay, RelayRouter
from schemas.failures import (
    DeferredFailure,
    Reason,
    RelayUnavailable,
    ThrottledFailure,
    WorkerFailure,
)
from tests.fakes import FakeRelay
from tests.unit.test_pacing_limiter import MARGIN, FakeTime, most_in_window
from tests.unit.test_pacing_pacer import Events
from tests.unit.test_relay_router import EMAIL

A, B = "smtp://a:25", "smtp://b:25"
RATE_LIMITED = "421 4.7.0 rate limited at end of DATA"


class Stamped(FakeRelay):
    """A ``FakeRelay`` that notes the (fake) time of every send it receives."""

    def __init__(self, time: FakeTime, *script: WorkerFailure | None) -> None:
        super().__init__(*script)
        self.time = time
        self.at: list[float] = []

    def send(self, email: OutgoingEmail) -> str:
        self.at.append(self.time.now)
        return super().send(email)


class CountingStore(MemoryRateStore):
    def __init__(self, time: FakeTime) -> None:
        super().__init__(margin=MARGIN, clock=time.clock)
        self.pushes = self.throttles = 0

    def throttle(
        self, route: str, ceiling: float | None, observed: float, retry_after: float | None
    ) -> Throttle:
        self.throttles += 1
        return super().throttle(route, ceiling, observed, retry_after)

    def push(self, route: str, after: float, excess: float) -> None:
        self.pushes += 1
        super().push(route, after, excess)


class World:
    """Relays ``a`` and ``b`` (in that order) behind a router paced by one ``RoutePacer``.
    ``fail_max=1``: a single failure of a relay would open its breaker."""

    def __init__(
        self,
        time: FakeTime,
        *relays: FakeRelay,
        weights: tuple[int | None, ...] = (),
        relay: float | None = None,
        relay_rates: dict[str, float] | None = None,
        max_wait: float = 5.0,
        reset_seconds: float = 30,
    ) -> None:
        self.time, self.store, self.events = time, CountingStore(time), Events()
        config = PacerConfig(
            relay, {}, max_wait=max_wait, margin=MARGIN, relay_rates=relay_rates or {}
        )
        self.pacer = RoutePacer(config, self.store, self.events, clock=time.clock, wait=time.wait)
        self.counted: list[tuple[str, str]] = []
        weights = weights or (None,) * len(relays)
        self.router = RelayRouter(
            [Relay(n, r, w) for n, r, w in zip((A, B), relays, weights, strict=False)],
            fail_max=1,
            reset_seconds=reset_seconds,
            observe=lambda relay, outcome: self.counted.append((relay, outcome)),
            clock=time.clock,
            pacer=self.pacer,
        )

    def send(self, domain: str = "example.org") -> str | WorkerFailure:
        """One send as the pipeline makes it: the relay that took it, or the failure."""
        try:
            self.pacer.wait_turn(domain, 0)
            sent = self.router.send(EMAIL)
        except WorkerFailure as failure:
            self.pacer.report(domain, failure)
            return failure
        self.pacer.report(domain, None)
        return sent.relay

    def timed(self) -> tuple[str | WorkerFailure, float]:
        started = self.time.now
        outcome = self.send()
        return outcome, self.time.now - started


def test_a_throttled_relay_slows_the_sends_through_it_and_no_other() -> None:
    time = FakeTime()
    a, b = Stamped(time, ThrottledFailure("relay", RATE_LIMITED)), Stamped(time)
    world = World(time, a, b, weights=(1, 1))  # round robin: a, b, a, b, ...
    refused = world.send()
    assert isinstance(refused, ThrottledFailure) and refused.route == f"relay:{A}"
    outcomes = [world.timed() for _ in range(10)]
    # a's first slot at 0.5 a second is free at once; its next ones are 2 s away, longer than
    # a send waits while b could take it (SPILL_PATIENCE_SECONDS): b takes them, nobody waits.
    assert [relay for relay, _ in outcomes] == [B, A] + [B] * 8
    assert [took for _, took in outcomes] == [0.0] * 10
    assert most_in_window(a.at[1:]) == 1  # 0.5 a second, recovering 10 % a second
    assert world.events.throttles == [f"relay:{A}"]  # heard once: the pipeline left it alone
    assert set(world.pacer.rates()) == {f"relay:{A}"}
    started = time.now
    world.pacer.wait_turn("example.org", 0)  # the pipeline's wait knows no relay's route
    assert time.now == started


def test_past_the_maximum_wait_the_next_relay_takes_the_message_without_a_failure() -> None:
    time = FakeTime()
    a = Stamped(time, ThrottledFailure("relay", "429 too many requests", retry_after=60))
    b = Stamped(time)
    world = World(time, a, b)  # priority order: a first
    assert isinstance(world.send(), ThrottledFailure)  # a's answer: deferred, no attempt
    outcomes = [world.timed() for _ in range(10)]
    assert outcomes == [(B, 0.0)] * 10  # b at once: a sent nothing, spent nothing
    assert a.sends == 1 and b.sends == 10
    assert world.router.breaker_states() == {A: "closed", B: "closed"}  # fail_max=1
    assert world.counted == [(A, "throttled")] + [(B, "sent")] * 10  # a turn is no try
    assert world.events.throttles == [f"relay:{A}"]
    time.now += 61  # a's pause is over: the traffic is a's again
    assert world.send() == A


def test_with_no_other_relay_a_turn_too_far_defers_the_message_as_before() -> None:
    time = FakeTime()
    a = Stamped(time, ThrottledFailure("relay", "429 too many requests", retry_after=60))
    world = World(time, a)
    world.send()
    time.now += 2  # past the debounce: a second halving would go through
    refused = world.send()
    assert isinstance(refused, TurnRefused) and refused.route == f"relay:{A}"
    assert refused.retry_after == pytest.approx(58, abs=0.1)  # what is left of the pause
    assert a.sends == 1 and world.router.breaker_states() == {A: "closed"}
    assert world.events.throttles == [f"relay:{A}"] and world.store.throttles == 1
    policy = RetryPolicy(max_attempts=3, delays=(5.0, 60.0, 300.0))
    decision = decide(refused, 0, 0, policy)
    assert isinstance(decision, Retry) and (decision.attempts, decision.deferrals) == (0, 0)
    assert decision.queue_delay == 60.0


def test_a_relays_own_rate_holds_and_the_overflow_goes_to_the_next_relay() -> None:
    time = FakeTime()
    a, b = Stamped(time), Stamped(time)
    world = World(time, a, b, relay_rates={A: 0.1})  # a slot every 10.5 s: past the 5 s wait
    assert [world.timed() for _ in range(4)] == [(A, 0.0)] + [(B, 0.0)] * 3
    time.now += 10.5
    assert [world.send() for _ in range(3)] == [A, B, B]
    assert world.pacer.rates() == {f"relay:{A}": 0.1}
    assert world.router.breaker_states() == {A: "closed", B: "closed"}


def test_a_relays_wait_takes_a_fresh_rate_limit_slot_instead_of_pushing_the_others() -> None:
    time = FakeTime()
    a, b = Stamped(time), Stamped(time)
    world = World(time, a, b, weights=(1, 1), relay=20, relay_rates={A: 2})
    outcomes = [world.timed() for _ in range(60)]
    assert most_in_window(a.at) <= 2 and most_in_window(sorted(a.at + b.at)) <= 20
    # b's sends waited for a RATE_LIMIT slot at most (1.05 / 20 s), never for a's turn ...
    assert max(took for relay, took in outcomes if relay == B) <= 1.05 / 20 + 1e-9
    # ... and a's waits left RATE_LIMIT's route alone: no send left late after its slot.
    assert world.store.pushes == 0


def test_a_refusal_of_a_trial_turn_leaves_the_breaker_to_the_next_trial() -> None:
    time = FakeTime()
    down = RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connect failed: ConnectionRefusedError")
    a, b = Stamped(time, down), Stamped(time)
    world = World(time, a, b, reset_seconds=10)
    assert world.send() == B  # a failed: it rests (fail_max=1)
    world.pacer.report_relay(A, ThrottledFailure(f"relay:{A}", "429", retry_after=20))
    time.now += 10  # a's trial is due, but a's route is paused
    assert world.send() == B and a.sends == 1
    assert world.router.breaker_states()[A] == "open"  # the trial was handed back unused
    time.now += 11
    assert world.send() == A  # the next trial took a's turn and closed the breaker
    assert world.router.breaker_states()[A] == "closed"


class ScriptedPacer:
    """A ``RelayPacer`` that records its calls and refuses the relays named in ``refuse``."""

    def __init__(self, refuse: dict[str, WorkerFailure] | None = None) -> None:
        self.refuse = refuse or {}
        self.calls: list[tuple[str, str, object]] = []
        self.patience: list[float | None] = []

    def wait_relay(self, name: str, priority: int, patience: float | None = None) -> None:
        self.calls.append(("wait", name, priority))
        self.patience.append(patience)
        if name in self.refuse:
            raise self.refuse[name]

    def report_relay(self, name: str, failure: WorkerFailure | None) -> None:
        self.calls.append(("report", name, None if failure is None else type(failure).__name__))


def router(pacer: ScriptedPacer, *relays: FakeRelay) -> RelayRouter:
    return RelayRouter(
        [Relay(n, r) for n, r in zip((A, B), relays, strict=False)],
        fail_max=1,
        reset_seconds=30,
        pacer=pacer,
    )


def test_the_router_asks_for_each_relays_turn_with_the_priority_and_reports_its_answer() -> None:
    pacer = ScriptedPacer()
    down = RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connection lost at RCPT")
    sent = router(pacer, FakeRelay(down), FakeRelay()).send(replace(EMAIL, priority=7))
    assert sent.relay == B
    assert pacer.calls == [
        ("wait", A, 7),
        ("report", A, "RelayUnavailable"),
        ("wait", B, 7),
        ("report", B, None),
    ]


def test_a_turn_refused_everywhere_defers_at_the_soonest_turn() -> None:
    soon, late = TurnRefused(f"relay:{A}", retry_after=3), TurnRefused(f"relay:{B}", retry_after=9)
    a, b = FakeRelay(), FakeRelay()
    with pytest.raises(ThrottledFailure) as raised:
        router(ScriptedPacer({A: soon, B: late}), a, b).send(EMAIL)
    assert raised.value is soon and a.sends == b.sends == 0


def test_a_busy_relay_outranks_another_relays_failure_nothing_spent() -> None:
    refused = TurnRefused(f"relay:{A}", retry_after=2)
    b = FakeRelay(RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connect failed"))
    with pytest.raises(ThrottledFailure) as raised:
        router(ScriptedPacer({A: refused}), FakeRelay(), b).send(EMAIL)
    assert raised.value is refused and b.sends == 1  # b was tried, and failed


@pytest.mark.parametrize(
    "refusal",
    [
        TurnRefused("relay", retry_after=7),  # a fresh RATE_LIMIT slot is too far
        DeferredFailure(Reason.DATABASE_UNAVAILABLE, "rate store unreachable"),
    ],
    ids=["rate-limit", "store-down"],
)
def test_a_refusal_no_other_relay_could_avoid_ends_the_send(refusal: WorkerFailure) -> None:
    a, b = FakeRelay(), FakeRelay()
    routed = router(ScriptedPacer({A: refusal}), a, b)
    with pytest.raises(WorkerFailure) as raised:
        routed.send(EMAIL)
    assert raised.value is refusal and a.sends == b.sends == 0
    assert routed.breaker_states() == {A: "closed", B: "closed"}


def test_a_relay_with_another_behind_it_is_waited_for_briefly_the_last_one_fully() -> None:
    # A throttled A spills its message to B after SPILL_PATIENCE_SECONDS instead of holding a
    # thread for the whole max wait; the last relay in the order gets the full wait.
    refused = ThrottledFailure(f"relay:{A}", "turn too far", retry_after=2)
    pacer = ScriptedPacer({A: refused})
    a, b = FakeRelay(), FakeRelay()
    sent = router(pacer, a, b).send(EMAIL)
    assert sent.relay == B and a.sends == 0 and b.sends == 1
    assert pacer.patience == [SPILL_PATIENCE_SECONDS, None]
