"""The rate limiter's shared stores on real servers, one suite for each (Postgres, and Redis
for ``REDIS_URL``): batches of slots from two stores (two replicas' connections) racing in
threads never overlap nor crowd a second, a throttle halves once however many report it, a
pause moves the next slot, and the SQL and Lua arithmetic agree with the Python twin
(``pacing.adaptive``, ``pacing.store``)."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from email_worker.ledger.rate_routes import PgRateStore
from email_worker.pacing.adaptive import Recovery, rate_in_force
from email_worker.pacing.store import RateStore, spacing_for
from email_worker.redis_store import RedisRateStore
from tests.support.services import skip_or_fail
from tests.unit.test_pacing_limiter import most_in_window

pytestmark = pytest.mark.integration

MARGIN = 0.05
FAST = Recovery(unlimited_after=0.6, debounce=0.4)  # so recovery shows within a test

MakeStore = Callable[[], RateStore]


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        skip_or_fail("Redis is not reachable (no REDIS_URL, nothing on 127.0.0.1:6379)")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["postgres", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    made: list[RateStore] = []
    if request.param == "postgres":
        url = request.getfixturevalue("database_url")
        setup = Database(url, pool_size=1)
        migrate(setup)
        setup.close()

        def make() -> RateStore:
            store = PgRateStore(Database(url, pool_size=2), margin=MARGIN, recovery=FAST)
            made.append(store)
            return store
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"ew-test-{uuid.uuid4().hex[:10]}"

        def make() -> RateStore:
            store = RedisRateStore(url, margin=MARGIN, recovery=FAST, prefix=prefix)
            made.append(store)
            return store

    yield make
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    for store in made:
        store.close()


def test_consecutive_batches_are_contiguous_and_spaced_by_the_rate(make_store: MakeStore) -> None:
    store = make_store()
    first = store.reserve("relay", 20, 5, horizon=5)
    second = store.reserve("relay", 20, 5, horizon=5)
    assert first.rate == 20 and first.granted == 5
    assert first.spacing == pytest.approx(spacing_for(20, MARGIN))
    assert first.start == pytest.approx(first.now, abs=0.01)  # an idle route starts now
    assert second.start == pytest.approx(first.start + 5 * first.spacing, abs=1e-5)


def test_two_replicas_racing_never_share_a_slot_nor_crowd_a_second(make_store: MakeStore) -> None:
    stores = [make_store(), make_store()]
    slots: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def reserve(store: RateStore) -> None:
        try:
            for _ in range(15):
                got = store.reserve("relay", 50, 4, horizon=30)
                with lock:
                    slots.extend(got.start + i * got.spacing for i in range(got.granted))
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=reserve, args=(s,)) for s in stores for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(slots) == 2 * 3 * 15 * 4
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) >= spacing_for(50, MARGIN) - 1e-5
    assert most_in_window(slots) <= 50


def test_nothing_is_reserved_beyond_the_horizon(make_store: MakeStore) -> None:
    store = make_store()
    store.reserve("domain:gmail.com", 2, 10, horizon=10)  # the next 5 s are taken
    refused = store.reserve("domain:gmail.com", 2, 1, horizon=1)
    assert refused.granted == 0 and refused.start - refused.now > 4
    again = store.reserve("domain:gmail.com", 2, 1, horizon=10)
    assert again.start == pytest.approx(refused.start, abs=1e-5)  # the refusal took nothing


def test_a_throttle_halves_once_per_debounce_and_pauses(make_store: MakeStore) -> None:
    first, second = make_store(), make_store()
    halved = first.throttle("relay", 20, observed=0, retry_after=None)
    again = second.throttle("relay", 20, observed=0, retry_after=3)
    assert halved.halved and not again.halved
    assert halved.state.base == pytest.approx(10)
    assert again.state.base == pytest.approx(10)
    assert again.state.paused_until == pytest.approx(again.now + 3, abs=0.01)
    reservation = first.reserve("relay", 20, 1, horizon=10)
    assert reservation.start == pytest.approx(again.state.paused_until, abs=1e-5)
    assert reservation.rate == pytest.approx(
        rate_in_force(20, again.state, reservation.now, FAST), rel=1e-6
    )
    assert set(first.snapshot().routes) == {"relay"}


def test_an_unconfigured_route_starts_from_the_observed_rate_and_recovers_to_unlimited(
    make_store: MakeStore,
) -> None:
    store = make_store()
    throttled = store.throttle("domain:outlook.com", None, observed=30, retry_after=None)
    assert throttled.state.base == pytest.approx(15)
    reservation = store.reserve("domain:outlook.com", None, 1, horizon=5)
    assert reservation.rate == pytest.approx(
        rate_in_force(None, throttled.state, reservation.now, FAST), rel=1e-6
    )
    recovered = threading.Event()
    for _ in range(100):  # the store's clock must pass unlimited_after: poll it, with a deadline
        if store.reserve("domain:outlook.com", None, 1, horizon=5).rate is None:
            recovered.set()
            break
        recovered.wait(0.05)
    assert recovered.is_set()


def test_a_push_moves_the_next_free_slot_past_a_late_send(make_store: MakeStore) -> None:
    store = make_store()
    first = store.reserve("relay", 10, 1, horizon=5)
    store.push("relay", first.start + first.spacing, 0.3)  # that send came 0.3 s too late
    second = store.reserve("relay", 10, 1, horizon=5)
    assert second.start == pytest.approx(first.start + first.spacing + 0.3, abs=1e-5)
    store.push("relay", first.start, 0.2)  # an earlier slot: the later free slot moves on
    third = store.reserve("relay", 10, 1, horizon=5)
    assert third.start == pytest.approx(second.start + second.spacing + 0.2, abs=1e-5)
