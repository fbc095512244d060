"""Which relay a message tries first and next (relays/selection.py), and each relay's breaker
(relays/breaker.py) on an injected clock: rest, one trial at a time, recovery."""

from __future__ import annotations

from collections import Counter

import pytest

from email_worker.relays.breaker import Health, RelayBreaker
from email_worker.relays.selection import RelayOrder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- order ----------------------------------------------------------------------------------


def test_without_weights_the_order_given_is_the_priority() -> None:
    order = RelayOrder([None, None, None])
    assert not order.weighted
    assert [order.order([0, 1, 2]) for _ in range(3)] == [[0, 1, 2]] * 3
    assert order.order([2, 1]) == [1, 2]  # the first is resting: the next in line leads


def test_smooth_weights_spread_the_heavy_relay_between_the_light_ones() -> None:
    order = RelayOrder([5, 1, 1])
    firsts = [order.order([0, 1, 2])[0] for _ in range(7)]
    assert firsts == [0, 0, 1, 0, 2, 0, 0]  # nginx's example: a a b a c a a


@pytest.mark.parametrize("weights", [(3, 1), (1, 1, 2), (7, 0, 3), (1, None)])
def test_weights_share_the_traffic_exactly_over_whole_cycles(
    weights: tuple[int | None, ...],
) -> None:
    order = RelayOrder(list(weights))
    shares = [1 if w is None else w for w in weights]
    cycles = 50
    firsts = Counter(order.order(list(range(len(weights))))[0] for _ in range(cycles * sum(shares)))
    assert [firsts[i] for i in range(len(weights))] == [cycles * w for w in shares]


def test_a_resting_relays_share_goes_to_the_others_by_their_weights() -> None:
    order = RelayOrder([2, 1, 1])
    firsts = Counter(order.order([1, 2])[0] for _ in range(100))  # relay 0 rests
    assert firsts == {1: 50, 2: 50}


def test_failover_order_is_the_chosen_then_the_weighted_then_the_backups() -> None:
    order = RelayOrder([0, 1, 1, 0])
    assert order.order([0, 1, 2, 3]) == [1, 2, 0, 3]
    assert order.order([0, 1, 2, 3]) == [2, 1, 0, 3]
    assert order.order([0, 3]) == [0, 3]  # no weighted relay available: backups in order


# --- breaker --------------------------------------------------------------------------------


def breaker(clock: Clock, fail_max: int = 2, reset: float = 30.0) -> RelayBreaker:
    return RelayBreaker(fail_max=fail_max, reset_seconds=reset, clock=clock)


def fail(b: RelayBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = b.begin()
        assert ticket is not None
        b.end(ticket, Health.FAILED)


def test_failures_in_a_row_open_the_breaker_and_an_answer_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b)
    ticket = b.begin()
    assert ticket is not None and not ticket.trial
    b.end(ticket, Health.HEALTHY)  # the count starts again
    fail(b)
    assert b.state == "closed" and b.available()
    fail(b)
    assert b.state == "open" and not b.available() and b.begin() is None


def test_after_the_rest_one_trial_goes_through_at_a_time() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    clock.now += 29.9
    assert b.begin() is None
    clock.now += 0.1
    trial = b.begin()
    assert trial is not None and trial.trial and b.state == "half-open"
    assert not b.available() and b.begin() is None  # a second thread waits for the verdict
    b.end(trial, Health.HEALTHY)
    assert b.state == "closed" and b.available()


def test_a_failed_trial_rests_the_relay_a_full_period_again() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    clock.now += 31
    trial = b.begin()
    assert trial is not None
    clock.now += 5
    b.end(trial, Health.FAILED)
    assert b.state == "open"
    clock.now += 29.9
    assert b.begin() is None
    clock.now += 0.1
    assert b.begin() is not None


def test_a_neutral_trial_leaves_the_next_send_to_try_again() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    clock.now += 31
    trial = b.begin()
    assert trial is not None
    b.end(trial, Health.NEUTRAL)  # our pool was full: the relay was not tested
    assert b.state == "open" and b.available()


def test_a_send_begun_before_the_breaker_opened_does_not_close_it() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.begin()
    assert early is not None
    fail(b, 2)
    b.end(early, Health.HEALTHY)
    assert b.state == "open"


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RelayBreaker(fail_max=0, reset_seconds=1)
