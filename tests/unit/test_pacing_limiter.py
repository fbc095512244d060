"""The route limiter on a fake clock (no sleeps): slots spaced by the rate and the margin,
shared by replicas through one store, batches sized to demand, the maximum wait, priority
order among waiting threads. Threaded tests synchronise on a gate in the store, never on time.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_worker.pacing.limiter import RouteLimiter
from email_worker.pacing.memory import MemoryRateStore
from email_worker.pacing.store import Reservation, StoreClock, reserve_slots, spacing_for
from schemas.failures import ThrottledFailure

MARGIN = 0.05


class FakeTime:
    """One clock for the store (epoch) and the replicas (monotonic); a wait moves it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def clock(self) -> float:
        return self.now

    def wait(self, condition: threading.Condition, timeout: float) -> bool:
        self.now = max(self.now + max(timeout, 0.0), math.nextafter(self.now, math.inf))
        return False


def limiter(
    store: MemoryRateStore, time: FakeTime, rate: float | None = 10.0, max_wait: float = 5.0
) -> RouteLimiter:
    return RouteLimiter(
        "relay", rate, store, max_wait=max_wait, margin=MARGIN, clock=time.clock, wait=time.wait
    )


def most_in_window(times: list[float], width: float = 1.0) -> int:
    """The largest number of ``times`` in any closed window of ``width`` seconds."""
    ordered = sorted(times)
    best, low = 0, 0
    for high, at in enumerate(ordered):
        while ordered[low] < at - width - 1e-9:
            low += 1
        best = max(best, high - low + 1)
    return best


def test_slots_are_spaced_by_the_rate_plus_the_margin() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    route = limiter(store, time, rate=10)
    granted = []
    for _ in range(30):
        route.acquire(0)
        granted.append(time.now)
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert min(gaps) == pytest.approx(1.05 / 10)
    assert most_in_window(granted) == 10


def test_a_replica_asks_the_store_a_few_times_a_second_however_busy() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    route = limiter(store, time, rate=400)
    for _ in range(400):  # a second at the full rate: batches grow with the demand
        route.acquire(0)
    warmed_up, started = store.calls, time.now
    for _ in range(800):
        route.acquire(0)
    assert time.now - started == pytest.approx(2 * 1.05, rel=0.02)
    assert store.calls - warmed_up <= 2 * 5  # a batch covers a quarter of a second


@settings(max_examples=60, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=60),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=0.4),  # time before the next arrival
            st.integers(min_value=0, max_value=1),  # which replica
            st.integers(min_value=0, max_value=10),  # priority
        ),
        min_size=1,
        max_size=150,
    ),
)
def test_two_replicas_never_grant_more_than_the_rate_in_any_second(
    rate: int, steps: list[tuple[float, int, int]]
) -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    replicas = [limiter(store, time, rate=rate, max_wait=1e9) for _ in range(2)]
    granted = []
    for gap, replica, priority in steps:
        time.now += gap
        replicas[replica].acquire(priority)
        granted.append(time.now)
    assert most_in_window(granted) <= rate


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0.2, max_value=80),
    count=st.integers(min_value=1, max_value=300),
    tat=st.floats(min_value=-5, max_value=5),
    horizon=st.floats(min_value=0.01, max_value=10),
)
def test_a_reservation_never_starts_beyond_the_horizon_nor_before_the_tat(
    rate: float, count: int, tat: float, horizon: float
) -> None:
    spacing = spacing_for(rate, MARGIN)
    start, granted = reserve_slots(tat, 0.0, 0.0, spacing, count, horizon)
    assert start >= max(tat, 0.0)
    if granted:
        assert start + (granted - 1) * spacing <= horizon + 1e-9
        assert granted <= count
    else:
        assert start > horizon


def test_a_pause_beyond_the_maximum_wait_is_refused_at_once_with_its_length() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    store.throttle("relay", 10, observed=0, retry_after=30)
    route = limiter(store, time, rate=10, max_wait=5)
    with pytest.raises(ThrottledFailure) as refused:
        route.acquire(0)
    assert refused.value.route == "relay"
    assert refused.value.retry_after == pytest.approx(30, abs=0.01)
    assert time.now == 1_000_000.0  # nothing waited
    calls = store.calls
    with pytest.raises(ThrottledFailure):
        route.acquire(0)
    assert store.calls == calls  # the store's answer is remembered: no second round trip


def test_a_slot_taken_too_late_is_dropped_not_used() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    route = limiter(store, time, rate=4)
    route.acquire(0)
    route.acquire(0)  # asks for a batch (demand), so one slot is left for later
    time.now += 10  # every slot still held is long past
    before = time.now
    route.acquire(0)
    assert time.now - before <= 1.05 / 4 + 1e-9  # a fresh slot, not a stale one at once


def test_a_late_send_moves_the_next_free_slot_by_its_excess() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    first, second = limiter(store, time), limiter(store, time)  # two replicas, 10 a second
    slot = first.acquire(0)
    assert slot == time.now
    time.now += 0.3  # the send took 0.3 s: 0.275 s more than half the margin allows
    first.finished(slot, time.now)
    assert second.acquire(0) == pytest.approx(slot + 1.05 / 10 + 0.275)


def test_a_send_on_time_moves_nothing() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    route = limiter(store, time)
    slot = route.acquire(0)
    assert slot is not None
    calls = store.calls
    route.finished(slot, slot + MARGIN / 4)
    assert store.calls == calls


def test_a_recovered_route_lets_everyone_through() -> None:
    time = FakeTime()
    store = MemoryRateStore(margin=MARGIN, clock=time.clock)
    route = limiter(store, time, rate=None)  # an unconfigured route, never throttled
    route.acquire(0)
    assert route.unlimited
    assert route.acquire(0) is None


class GateStore:
    """Reservations wait for ``gate``; each grants ``per_call`` slots all due at once."""

    def __init__(self, per_call: int = 10) -> None:
        self.gate = threading.Event()
        self.asked = threading.Event()
        self.per_call = per_call

    def reserve(self, route: str, ceiling: float | None, count: int, horizon: float) -> Reservation:
        self.asked.set()
        assert self.gate.wait(30)
        return Reservation(1.0, 1e-6, self.per_call, 1.0, 1e6)

    def throttle(self, *args: object) -> object:
        raise NotImplementedError

    def push(self, *args: object) -> None:
        raise NotImplementedError

    def snapshot(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        return None


def wait_for_queue(route: RouteLimiter, threads: int) -> None:
    """Wait (on an event, with a deadline) until ``threads`` threads wait for ``route``."""
    tick = threading.Event()
    for _ in range(2000):
        if route.waiting == threads:
            return
        tick.wait(0.005)
    raise AssertionError(f"timed out waiting for {threads} threads to queue")


@pytest.fixture
def gate() -> Iterator[GateStore]:
    store = GateStore()
    yield store
    store.gate.set()


def test_a_higher_priority_takes_the_next_slot_first_and_fifo_holds_within_one(
    gate: GateStore,
) -> None:
    route = RouteLimiter("relay", 10, gate, max_wait=30, margin=MARGIN)  # type: ignore[arg-type]
    order: list[str] = []
    lock = threading.Lock()

    def send(name: str, priority: int) -> None:
        route.acquire(priority)
        with lock:
            order.append(name)

    threads = []
    for name, priority in [("first", 0), ("bulk-1", 0), ("bulk-2", 0), ("urgent", 9)]:
        thread = threading.Thread(target=send, args=(name, priority))
        thread.start()
        threads.append(thread)
        if name == "first":
            assert gate.asked.wait(10)  # "first" is asking the store for slots
        wait_for_queue(route, len(threads))
    gate.gate.set()
    for thread in threads:
        thread.join(10)
    assert order == ["urgent", "first", "bulk-1", "bulk-2"]


def test_a_thread_too_far_back_in_the_queue_is_refused_without_waiting(gate: GateStore) -> None:
    # 1 a second: the second waiter behind the head would wait ~2.1 s, over the 2 s allowed.
    route = RouteLimiter("relay", 1, gate, max_wait=2, margin=MARGIN)  # type: ignore[arg-type]
    head = threading.Thread(target=route.acquire, args=(0,))
    head.start()
    assert gate.asked.wait(10)
    second = threading.Thread(target=route.acquire, args=(0,))
    second.start()
    wait_for_queue(route, 2)
    with pytest.raises(ThrottledFailure) as refused:
        route.acquire(0)
    assert refused.value.retry_after is not None and refused.value.retry_after > 2
    gate.gate.set()
    head.join(10)
    second.join(10)


def test_the_store_clock_keeps_the_quickest_round_trip_and_follows_a_step() -> None:
    clock = StoreClock()
    clock.observe(10.0, 10.002, 1000.001)  # 2 ms round trip: the store is 990 s ahead
    assert clock.local(1000.001) == pytest.approx(10.001)
    clock.observe(11.0, 11.080, 1001.070)  # a slow answer: kept out, it would move slots
    assert clock.local(1001.0) == pytest.approx(11.0)
    assert clock.remote(11.0) == pytest.approx(1001.0)
    clock.observe(12.0, 12.004, 1102.002)  # the store's clock stepped 100 s: follow it
    assert clock.local(1102.002) == pytest.approx(12.002)
