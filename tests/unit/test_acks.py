"""Which acks may be sent as one ``multiple`` ack (pure)."""

from __future__ import annotations

import random

from email_worker.broker.acks import coalesce_acks


def test_the_oldest_run_of_finished_deliveries_becomes_one_multiple_ack() -> None:
    assert coalesce_acks([3, 4, 5, 6, 7], {3, 4, 5, 7}) == (5, [7])


def test_nothing_is_coalesced_while_the_oldest_delivery_is_in_progress() -> None:
    assert coalesce_acks([3, 4, 5], {4, 5}) == (None, [4, 5])


def test_every_unsettled_delivery_finished_is_a_single_multiple_ack() -> None:
    assert coalesce_acks([1, 2, 3], {1, 2, 3}) == (3, [])


def test_no_acks_send_nothing() -> None:
    assert coalesce_acks([1, 2], set()) == (None, [])


def test_a_multiple_ack_never_covers_an_unfinished_delivery() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        unsettled = sorted(rng.sample(range(1, 60), rng.randint(1, 30)))
        acks = {tag for tag in unsettled if rng.random() < 0.7}
        upto, singles = coalesce_acks(unsettled, acks)

        covered = {tag for tag in unsettled if upto is not None and tag <= upto}
        assert covered <= acks  # nothing still in progress is acked
        assert covered | set(singles) == acks  # every finished delivery is acked ...
        assert not covered & set(singles)  # ... exactly once
