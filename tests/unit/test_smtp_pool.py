"""The relay connection pool's bookkeeping, with a connect that opens nothing: what the gauges
read while a connection is opened, used, idle or discarded, and the bounded wait for a slot."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest

from email_worker.smtp.pool import PoolCounts, SmtpPool
from schemas.failures import DeferredFailure, Reason


class SlowConnect:
    """Returns an unconnected ``smtplib.SMTP`` once ``release`` is set, or raises ``error``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.error: Exception | None = None
        self.opened = 0

    def __call__(self) -> smtplib.SMTP:
        assert self.release.wait(5)
        if self.error is not None:
            raise self.error
        self.opened += 1
        return smtplib.SMTP()


def wait_for(pool: SmtpPool, expected: PoolCounts) -> None:
    deadline = time.monotonic() + 5
    while pool.counts() != expected:
        assert time.monotonic() < deadline, f"counts stayed {pool.counts()}, not {expected}"
        time.sleep(0.001)


def test_a_connection_being_opened_counts_as_busy() -> None:
    connect = SlowConnect()
    connect.release.clear()
    pool = SmtpPool(connect, limit=2, wait_seconds=1)
    taken: list[smtplib.SMTP] = []
    opener = threading.Thread(target=lambda: taken.append(pool.take(fresh=False)[0]))
    opener.start()
    wait_for(pool, PoolCounts(busy=1, idle=0, waiting=0))  # still in connect
    connect.release.set()
    opener.join(5)
    assert pool.counts() == PoolCounts(busy=1, idle=0, waiting=0)  # now in use
    pool.give_back(taken[0])
    assert pool.counts() == PoolCounts(busy=0, idle=1, waiting=0)


def test_a_connect_that_fails_leaves_nothing_counted() -> None:
    connect = SlowConnect()
    connect.error = OSError("refused")
    pool = SmtpPool(connect, limit=2, wait_seconds=1)
    with pytest.raises(OSError, match="refused"):
        pool.take(fresh=False)
    assert pool.counts() == PoolCounts(busy=0, idle=0, waiting=0)


def test_idle_connections_are_reused_last_in_first_out_unless_fresh() -> None:
    connect = SlowConnect()
    pool = SmtpPool(connect, limit=3, wait_seconds=1)
    first, second = pool.take(fresh=False)[0], pool.take(fresh=False)[0]
    pool.give_back(first)
    pool.give_back(second)
    assert pool.take(fresh=False) == (second, True)
    new, reused = pool.take(fresh=True)
    assert not reused and new not in (first, second) and connect.opened == 3
    pool.discard(new)
    assert pool.counts() == PoolCounts(busy=1, idle=1, waiting=0)


def test_a_send_finding_no_slot_in_time_is_deferred_and_counted_waiting_meanwhile() -> None:
    pool = SmtpPool(SlowConnect(), limit=1, wait_seconds=0.3)
    outcome: list[BaseException] = []

    def second_send() -> None:
        try:
            with pool.slot():
                pass
        except DeferredFailure as failure:
            outcome.append(failure)

    with pool.slot():
        waiter = threading.Thread(target=second_send)
        waiter.start()
        wait_for(pool, PoolCounts(busy=0, idle=0, waiting=1))
        waiter.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], DeferredFailure)
    assert outcome[0].reason is Reason.SMTP_UNAVAILABLE
    assert "within 0.3 s" in outcome[0].detail
    assert pool.counts().waiting == 0
    with pool.slot():  # the slot was given back
        pass
