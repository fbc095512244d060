"""The pacer on a fake clock and the in-process store: no store call when nothing is limited,
which routes a send waits for, what a throttling answer does (one debounced halving from the
observed rate, a pause, recovery, back to unlimited), how replicas learn of it, the metrics'
labels, and that ``report`` never raises."""

from __future__ import annotations

import pytest

from email_worker.pacing import PacerConfig, PacerEvents, Recovery, RoutePacer, TurnRefused
from email_worker.pacing.adaptive import RouteState, halved, rate_in_force
from email_worker.pacing.memory import MemoryRateStore
from schemas.failures import Reason, ThrottledFailure, TransientFailure
from tests.unit.test_pacing_limiter import MARGIN, FakeTime, most_in_window


class Events(PacerEvents):
    def __init__(self) -> None:
        self.throttles: list[str] = []
        self.waits: list[float] = []

    def throttled(self, label: str) -> None:
        self.throttles.append(label)

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)


def make(
    time: FakeTime,
    store: MemoryRateStore | None = None,
    *,
    relay: float | None = None,
    domains: dict[str, float] | None = None,
    max_wait: float = 5.0,
) -> tuple[RoutePacer, MemoryRateStore, Events]:
    store = store or MemoryRateStore(margin=MARGIN, clock=time.clock)
    events = Events()
    config = PacerConfig(relay, domains or {}, max_wait=max_wait, margin=MARGIN)
    pacer = RoutePacer(config, store, events, clock=time.clock, wait=time.wait)
    return pacer, store, events


def sends(
    pacer: RoutePacer, time: FakeTime, count: int, domain: str = "example.com"
) -> list[float]:
    """``count`` sends as fast as the pacer allows, all accepted: when each left."""
    left = []
    for _ in range(count):
        pacer.wait_turn(domain, 0)
        left.append(time.now)
        pacer.report(domain, None)
    return left


def test_nothing_limited_and_nothing_throttled_costs_no_store_call() -> None:
    time = FakeTime()
    pacer, store, events = make(time)
    assert sends(pacer, time, 500) == [time.now] * 500
    pacer.report("example.com", TransientFailure(Reason.SMTP_TRANSIENT, "451 4.3.0 at RCPT"))
    assert store.calls == 0 and events.waits == [] and pacer.rates() == {}


def test_rate_limit_paces_the_relay_and_counts_the_wait() -> None:
    time = FakeTime()
    pacer, _, events = make(time, relay=20)
    left = sends(pacer, time, 100, "a.example") + sends(pacer, time, 100, "b.example")
    assert most_in_window(left) == 20
    assert sum(events.waits) == pytest.approx(left[-1] - left[0], rel=0.05)
    assert pacer.rates() == {"relay": 20}


def test_a_domain_limit_applies_to_its_domain_only() -> None:
    time = FakeTime()
    pacer, store, _ = make(time, domains={"gmail.com": 5})
    assert most_in_window(sends(pacer, time, 30, "gmail.com")) == 5
    calls, started = store.calls, time.now
    sends(pacer, time, 50, "yahoo.com")
    assert time.now == started and store.calls <= calls + 1  # a refresh at most


def test_a_relay_throttle_halves_from_the_observed_rate_once_per_second() -> None:
    time = FakeTime()
    pacer, store, events = make(time)
    for _ in range(40):  # 40 accepted within one second: 40 a second observed
        pacer.report("example.com", None)
        time.now += 0.025
    refused = ThrottledFailure("relay", "421 4.7.0 at end of DATA")
    for _ in range(30):  # every send in flight comes back refused at once
        pacer.report("example.com", refused)
    assert events.throttles == ["relay"] * 30
    assert store.calls == 1  # one halving, whatever the number of refusals
    assert pacer.rates() == {"relay": pytest.approx(20, rel=0.01)}
    left = sends(pacer, time, 21)
    assert left[-1] - left[0] >= 20 * 1.05 / 21  # from 20 a second, recovering 10 % a second


def test_a_relays_throttle_slows_that_relays_turn_from_its_observed_rate_only() -> None:
    time = FakeTime()
    pacer, _, events = make(time, relay=100)
    left = []
    for _ in range(60):  # accepted through relay a at 100 a second less the margin
        pacer.wait_turn("example.com", 0)
        pacer.wait_relay("smtp://a:25", 0)
        left.append(time.now)
        pacer.report_relay("smtp://a:25", None)
        pacer.report("example.com", None)
    observed = 60 / (left[-1] - left[0])  # measured over the time the route was seen
    answer = ThrottledFailure("relay:smtp://a:25", "421 4.7.0 at MAIL")
    pacer.report_relay("smtp://a:25", answer)
    pacer.report("example.com", answer)  # the pipeline hears it too: the router's to count
    assert events.throttles == ["relay:smtp://a:25"]
    rates = pacer.rates()
    assert rates == {"relay": 100, "relay:smtp://a:25": pytest.approx(observed / 2, rel=0.01)}
    for _ in range(30):  # the pipeline's wait and another relay's: RATE_LIMIT only
        started = time.now
        pacer.wait_turn("example.com", 0)
        pacer.wait_relay("smtp://b:25", 0)
        pacer.report_relay("smtp://b:25", None)
        pacer.report("example.com", None)
        assert time.now - started <= 1.05 / 100 + 1e-9
    started = time.now
    for _ in range(10):
        pacer.wait_relay("smtp://a:25", 0)
        pacer.report_relay("smtp://a:25", None)
    assert time.now - started >= 9 * 1.05 / (rates["relay:smtp://a:25"] * 1.2)


def test_a_relays_own_rate_is_a_ceiling_of_its_route() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    config = PacerConfig(None, {}, margin=MARGIN, relay_rates={"smtp://a:25": 4})
    pacer = RoutePacer(config, store, clock=time.clock, wait=time.wait)
    assert pacer.rates() == {"relay:smtp://a:25": 4}
    left = []
    for _ in range(20):
        pacer.wait_turn("example.com", 0)
        pacer.wait_relay("smtp://a:25", 0)
        left.append(time.now)
        pacer.report_relay("smtp://a:25", None)
        pacer.report("example.com", None)
    assert most_in_window(left) == 4


def test_this_replicas_own_refusal_of_a_slot_slows_nothing() -> None:
    time = FakeTime()
    pacer, store, events = make(time, relay=10)
    pacer.report("example.com", TurnRefused("relay", "rate limit: next slot in 6.0s"))
    pacer.report_relay("smtp://a:25", TurnRefused("relay:smtp://a:25", "next slot in 6.0s"))
    assert events.throttles == [] and store.calls == 0 and pacer.rates() == {"relay": 10}


def test_an_unconfigured_route_recovers_then_is_unlimited_and_free_again() -> None:
    time = FakeTime()
    pacer, store, _ = make(time)
    pacer.report("example.com", ThrottledFailure("relay", "421 at MAIL"))
    assert pacer.rates() == {"relay": 1.0 / 2}  # nothing observed: from 1 a second, halved
    time.now += Recovery().unlimited_after + 1
    sends(pacer, time, 3)  # a refresh learns it recovered
    calls = store.calls
    started = time.now
    sends(pacer, time, 100)
    assert time.now == started and store.calls == calls and pacer.rates() == {}


def test_a_domain_answer_throttles_that_domain_not_the_relay() -> None:
    time = FakeTime()
    pacer, _, _ = make(time, relay=50)
    pacer.report("Outlook.com", ThrottledFailure("domain", "450 4.7.1 at RCPT"))
    assert pacer.rates() == {"relay": 50, "domain:outlook.com": 0.5}
    started = time.now
    sends(pacer, time, 3, "outlook.com")
    assert time.now - started >= 2 * 1.05 / 0.5 * 0.99  # 0.5 a second on that domain


def test_an_advised_pause_holds_the_route_then_refuses_past_the_maximum_wait() -> None:
    time = FakeTime()
    pacer, _, _ = make(time, relay=10, max_wait=5)
    pacer.report("example.com", ThrottledFailure("relay", "429", retry_after=60))
    with pytest.raises(ThrottledFailure) as refused:
        pacer.wait_turn("example.com", 0)
    assert refused.value.retry_after == pytest.approx(60, abs=0.1)
    time.now += 61
    pacer.wait_turn("example.com", 0)


def test_a_replica_with_a_limit_learns_of_another_replicas_throttle_within_a_second() -> None:
    time = FakeTime()
    first, store, _ = make(time)
    second, _, _ = make(time, store, domains={"gmail.com": 100})
    sends(second, time, 5)
    first.report("example.com", ThrottledFailure("relay", "454 4.7.0 at MAIL"))
    time.now += 1.0
    started = time.now
    sends(second, time, 4)  # the first send refreshes; the rest wait for the relay's slots
    assert time.now - started >= 2 * 1.05 / 1.1  # 0.5 a second, grown 10 % in that second


def test_a_replica_without_limits_learns_at_its_own_first_refusal_without_halving_again() -> None:
    time = FakeTime()
    first, store, _ = make(time)
    second, _, _ = make(time, store)
    first.report("example.com", ThrottledFailure("relay", "421 4.7.0 at MAIL"))
    assert second.rates() == {}  # it asked nothing: no limit, no throttle of its own
    second.report("example.com", ThrottledFailure("relay", "421 4.7.0 at MAIL"))
    assert second.rates() == first.rates() == {"relay": 0.5}


def test_throttled_domains_past_fifty_share_one_label_and_leave_the_gauge() -> None:
    time = FakeTime()
    pacer, _, events = make(time, domains={"gmail.com": 20})
    for n in range(60):
        pacer.report(f"d{n}.example", ThrottledFailure("domain", "450 4.7.1 at RCPT"))
    assert len(set(events.throttles)) == 51 and events.throttles[-1] == "domain:other"
    rates = pacer.rates()
    assert len(rates) == 51 and "domain:other" not in rates and rates["domain:gmail.com"] == 20


class BrokenStore(MemoryRateStore):
    def throttle(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("store down")


def test_report_never_raises_even_when_the_store_is_down() -> None:
    time = FakeTime()
    store = BrokenStore(margin=MARGIN, clock=time.clock)
    pacer, _, events = make(time, store)
    pacer.report("example.com", ThrottledFailure("relay", "421 at MAIL"))
    assert events.throttles == ["relay"]


@pytest.mark.parametrize(
    ("ceiling", "state", "age", "expected"),
    [
        (20.0, RouteState(), 0.0, 20.0),
        (None, RouteState(), 0.0, None),
        (20.0, RouteState(5.0, 0.0), 0.0, 5.0),
        (20.0, RouteState(5.0, 0.0), 10.0, 5.0 * 1.1**10),
        (20.0, RouteState(5.0, 0.0), 100.0, 20.0),
        (None, RouteState(5.0, 0.0), 29.0, 5.0 * 1.1**29),
        (None, RouteState(5.0, 0.0), 30.0, None),
    ],
)
def test_rate_in_force(
    ceiling: float | None, state: RouteState, age: float, expected: float | None
) -> None:
    rate = rate_in_force(ceiling, state, age, Recovery())
    assert rate == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("ceiling", "state", "observed", "expected"),
    [
        (20.0, RouteState(), 0.0, 10.0),
        (None, RouteState(), 30.0, 15.0),
        (None, RouteState(), 0.2, 0.5),  # from 1 a second at least
        (20.0, RouteState(0.15, 0.0), 0.0, 0.1),  # never below the floor
    ],
)
def test_halving(
    ceiling: float | None, state: RouteState, observed: float, expected: float
) -> None:
    assert halved(ceiling, state, observed, 0.0, Recovery()) == pytest.approx(expected)
