"""Group commit: batches form from concurrent submits, every thread gets its own result or
error, and a batch that fails is run again item by item, each in its own thread, so one item's
error or wait is its own. No wait is unbounded: a hung leader or a failing observer strands
no one."""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Sequence

import pytest

from email_worker.ledger.group_commit import GroupCommit
from schemas.failures import DeferredFailure, Reason


class Recorder:
    """A batch runner that doubles numbers, records each batch, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.hold.wait(5)
        return [item * 2 for item in items]


class Submitters:
    """One thread per item, each submitting it; ``joined`` gives item → result or error."""

    def __init__(self, group: GroupCommit[int, int], items: list[int]) -> None:
        self.results: dict[int, int | BaseException] = {}
        self.finished = threading.Semaphore(0)  # released once per returned submit
        self.threads = [
            threading.Thread(target=self._submit, args=(group, i), daemon=True) for i in items
        ]  # daemon: a stranded submitter must not keep the test run alive
        for thread in self.threads:
            thread.start()

    def _submit(self, group: GroupCommit[int, int], item: int) -> None:
        try:
            self.results[item] = group.submit(item)
        except BaseException as exc:
            self.results[item] = exc
        self.finished.release()

    def joined(self) -> dict[int, int | BaseException]:
        for thread in self.threads:
            thread.join(5)
            assert not thread.is_alive(), "a submitter was stranded"
        return self.results


def wait_until_waiting(group: GroupCommit[int, int], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(group._waiting) < count:
        assert time.monotonic() < deadline, "the submitters never queued"
        time.sleep(0.001)


def test_a_lone_submit_runs_at_once_as_a_batch_of_one() -> None:
    runner = Recorder()
    group = GroupCommit(runner, max_batch=8)
    assert group.submit(21) == 42
    assert group.submit(5) == 10
    assert runner.batches == [[21], [5]]


def test_submits_made_while_a_batch_runs_share_the_next_batch() -> None:
    runner = Recorder()
    runner.hold.clear()
    group = GroupCommit(runner, max_batch=8)
    first = Submitters(group, [1])
    assert runner.entered.wait(5)
    others = Submitters(group, [2, 3, 4, 5])
    wait_until_waiting(group, 4)
    runner.hold.set()
    assert first.joined() == {1: 2}
    assert others.joined() == {2: 4, 3: 6, 4: 8, 5: 10}
    assert runner.batches[0] == [1]
    assert sorted(runner.batches[1]) == [2, 3, 4, 5]
    assert len(runner.batches) == 2


def test_no_batch_is_larger_than_max_batch() -> None:
    runner = Recorder()
    runner.hold.clear()
    group = GroupCommit(runner, max_batch=3)
    first = Submitters(group, [0])
    assert runner.entered.wait(5)
    others = Submitters(group, list(range(1, 8)))
    wait_until_waiting(group, 7)
    runner.hold.set()
    first.joined()
    assert others.joined() == {item: item * 2 for item in range(1, 8)}
    assert [len(batch) for batch in runner.batches] == [1, 3, 3, 1]


def test_an_error_answered_for_one_item_is_raised_by_that_submit_alone() -> None:
    def runner(items: Sequence[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {item}") if item < 0 else item for item in items]

    group = GroupCommit(runner, max_batch=8)
    with pytest.raises(ValueError, match="bad -1"):
        group.submit(-1)
    assert group.submit(7) == 7


def fails_on_negative(items: Sequence[int]) -> list[int | BaseException]:
    if any(item < 0 for item in items):
        raise ValueError("a negative number spoilt the batch")
    return [item + 1 for item in items]


def test_a_batch_that_raises_is_run_again_item_by_item() -> None:
    batches: list[list[int]] = []
    release = threading.Event()

    def runner(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if items == [0]:
            assert release.wait(5)
        return fails_on_negative(items)

    group = GroupCommit(runner, max_batch=8)
    first = Submitters(group, [0])
    deadline = time.monotonic() + 5
    while not batches:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    others = Submitters(group, [2, -3, 4])
    wait_until_waiting(group, 3)
    release.set()
    assert first.joined() == {0: 1}
    results = others.joined()
    assert (results[2], results[4]) == (3, 5)
    assert isinstance(results[-3], ValueError)  # the culprit alone fails
    assert sorted(batches[1]) == [-3, 2, 4]
    assert sorted(batches[2:]) == [[-3], [2], [4]]


def test_an_item_that_blocks_when_run_alone_holds_up_no_one() -> None:
    release = threading.Event()
    alone_calls: list[int] = []

    def grouped(items: Sequence[int]) -> list[int | BaseException]:
        if 99 in items:
            raise TimeoutError("row lock wait gave up")  # as a lock timeout would
        return list(items)

    def alone(items: Sequence[int]) -> list[int | BaseException]:
        alone_calls.extend(items)
        if items == [99]:
            assert release.wait(5)  # waits for the lock, in its own thread
        return list(items)

    group = GroupCommit(grouped, max_batch=8, alone=alone)
    blocked = Submitters(group, [99])
    deadline = time.monotonic() + 5
    while alone_calls != [99]:
        assert time.monotonic() < deadline, "the blocked item never ran alone"
        time.sleep(0.001)
    assert Submitters(group, [1, 2, 3]).joined() == {1: 1, 2: 2, 3: 3}
    assert blocked.threads[0].is_alive()
    release.set()
    assert blocked.joined() == {99: 99}
    assert alone_calls == [99]


def test_a_batch_of_other_threads_items_runs_outside_the_leaders_context() -> None:
    request: contextvars.ContextVar[int | None] = contextvars.ContextVar("request", default=None)
    seen: list[tuple[list[int], int | None]] = []
    release = threading.Event()

    def runner(items: Sequence[int]) -> list[int | BaseException]:
        seen.append((sorted(items), request.get()))
        if items == [1]:
            assert release.wait(5)
        return list(items)

    def submit_as(item: int) -> None:
        request.set(item)  # each thread starts with its own context
        group.submit(item)

    group = GroupCommit(runner, max_batch=8)
    threads = [threading.Thread(target=submit_as, args=(1,))]
    threads[0].start()
    deadline = time.monotonic() + 5
    while not seen:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    threads += [threading.Thread(target=submit_as, args=(item,)) for item in (2, 3)]
    for thread in threads[1:]:
        thread.start()
    wait_until_waiting(group, 2)
    release.set()
    for thread in threads:
        thread.join(5)
    # A lone item runs in its own thread's context; a shared batch names none of its items.
    assert seen == [([1], 1), ([2, 3], None)]


def test_a_runner_answering_the_wrong_number_of_results_fails_the_batch() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [], max_batch=8)
    with pytest.raises(RuntimeError, match="got 0 results"):
        group.submit(1)


def test_many_threads_each_get_their_own_result() -> None:
    rng = random.Random(4)
    sizes: list[int] = []
    observed: list[int] = []

    def runner(items: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        time.sleep(rng.random() / 2000)
        return [item * 3 for item in items]

    group = GroupCommit(runner, max_batch=5, observe=observed.append)
    submitters = Submitters(group, list(range(400)))
    assert submitters.joined() == {item: item * 3 for item in range(400)}
    assert sum(sizes) == 400
    assert max(sizes) <= 5
    assert observed == sizes  # every batch is observed, with its size


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="wait_seconds"):
        GroupCommit(Recorder(), max_batch=1, wait_seconds=0)


@pytest.mark.timeout(30)
def test_an_observer_that_raises_strands_no_one() -> None:
    def observe(size: int) -> None:
        if size > 1:
            raise RuntimeError("the metrics backend broke")

    runner = Recorder()
    runner.hold.clear()
    group = GroupCommit(runner, max_batch=8, observe=observe)
    first = Submitters(group, [1])
    assert runner.entered.wait(5)
    others = Submitters(group, [2, 3, 4])
    wait_until_waiting(group, 3)
    runner.hold.set()
    assert first.joined() == {1: 2}
    # Before the fix the batch's leader raised the observer's error and its followers hung.
    assert others.joined() == {2: 4, 3: 6, 4: 8}
    assert sorted(runner.batches[1]) == [2, 3, 4]  # the batch ran, once, as a batch


class Hung:
    """A batch runner that hangs on the batches holding ``culprit`` until released."""

    def __init__(self, culprit: int) -> None:
        self.culprit = culprit
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        if self.culprit in items:
            self.entered.set()
            assert self.release.wait(20)
        return [item * 2 for item in items]


def unavailable(error: int | BaseException) -> bool:
    return isinstance(error, DeferredFailure) and error.reason == Reason.DATABASE_UNAVAILABLE


@pytest.mark.timeout(30)
def test_followers_queued_behind_a_hung_leader_give_up_with_a_classified_failure() -> None:
    runner = Hung(culprit=1)
    group = GroupCommit(runner, max_batch=8, wait_seconds=0.2)
    leader = Submitters(group, [1])
    assert runner.entered.wait(5)
    followers = Submitters(group, [2, 3])
    results = followers.joined()  # each returns within its bound while the leader still hangs
    assert unavailable(results[2]) and unavailable(results[3])
    assert len(group._waiting) == 0  # the abandoned items will not run later
    runner.release.set()
    assert leader.joined() == {1: 2}
    assert group.submit(5) == 10  # the lead was given up: the next submit runs at once


@pytest.mark.timeout(30)
def test_a_follower_inside_a_hung_batch_gives_up_and_the_leader_still_finishes() -> None:
    runner = Recorder()
    runner.hold.clear()
    hung = Hung(culprit=2)

    def run(items: Sequence[int]) -> list[int | BaseException]:
        return runner(items) if items == [1] else hung(items)

    group = GroupCommit(run, max_batch=8, wait_seconds=2.0)  # room to queue both
    first = Submitters(group, [1])
    assert runner.entered.wait(5)
    batch = Submitters(group, [2, 3])
    wait_until_waiting(group, 2)
    runner.hold.set()
    assert first.joined() == {1: 2}
    assert hung.entered.wait(5)  # the batch [2, 3] runs and hangs
    assert batch.finished.acquire(timeout=5)  # one of them gives up while the other leads it
    ((gave_up, error),) = batch.results.items()
    assert unavailable(error)
    hung.release.set()
    results = batch.joined()
    leader = ({2, 3} - {gave_up}).pop()
    assert results[leader] == leader * 2
