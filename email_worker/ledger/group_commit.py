"""Group commit: many threads' single-item writes, run as one statement per batch.

A thread that submits while no batch is running becomes the leader: it takes every item waiting
(its own included, up to ``max_batch``), runs them together and hands each waiting thread its
own result. Threads that submit meanwhile wait for the next batch. Nothing waits on a timer, so
a lone submitter runs at once, and batches grow by themselves when the database is the slow
part (each batch costs one round trip and one commit instead of one per item).

Guarantees: every ``submit`` returns its own item's result or raises its own item's error. When
a batch raises, every thread in it runs its own item again, alone and in its own thread, so an
error or a wait that one item causes (bad data, a row lock another transaction holds) fails or
holds up that item only, never the items it was batched with nor the batches after it.
A batch that carries other threads' items runs in an empty ``contextvars`` context, so what it
logs names none of its requests rather than the leader's alone.

Every wait is bounded. A thread waiting for its batch (or its turn to lead) gives up after
``wait_seconds`` (``WAIT_SECONDS``, 60 s, by default) with
``DeferredFailure(DATABASE_UNAVAILABLE)``: its message is deferred like any other while the
database does not answer. An item still queued is withdrawn and never runs; an item whose
batch is already running (the leader hangs inside the statement) may still be written by it,
which the lease fence makes safe: a claim nobody uses expires, and a repeated ``finish`` of the
same lease writes nothing. The observer is told batch sizes on a best-effort basis: an observer
that raises is logged and ignored, never the batch's (or its waiters') failure.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from schemas.failures import DeferredFailure, Reason

log = logging.getLogger(__name__)

# How long a thread waits for its batch. Longer than the worst a healthy leader takes (a pool
# checkout waits up to 30 s when every connection is busy, a reconnect after a restart adds a
# few seconds), far shorter than a lease (120 s): past it the database is as good as down.
WAIT_SECONDS = 60.0

T = TypeVar("T")
R = TypeVar("R")

# ``run`` answers each item with its result, or with the exception that item must raise.
BatchRunner = Callable[[Sequence[T]], Sequence["R | BaseException"]]


class _RunAlone:
    """The batch failed as a whole: the item's own thread runs it again, alone."""


_RUN_ALONE = _RunAlone()


class _Slot(Generic[T, R]):
    __slots__ = ("done", "item", "result", "woken")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | BaseException | _RunAlone | None = None
        self.done = False  # else woken to lead the next batch
        self.woken = threading.Event()


class GroupCommit(Generic[T, R]):
    """Runs ``run`` over the items that threads submit concurrently, one batch at a time;
    ``alone`` (default ``run``) runs one item whose batch raised; ``observe`` is told the size
    of every batch; a submit waits at most ``wait_seconds`` for another thread's batch."""

    def __init__(
        self,
        run: BatchRunner[T, R],
        *,
        max_batch: int,
        alone: BatchRunner[T, R] | None = None,
        observe: Callable[[int], object] | None = None,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if wait_seconds <= 0:
            raise ValueError("wait_seconds must be positive")
        self._run = run
        self._alone = alone or run
        self._observe = observe
        self._max_batch = max_batch
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._waiting: deque[_Slot[T, R]] = deque()
        self._leading = False

    def submit(self, item: T) -> R:
        """Run ``item`` in the next batch and return its result (or raise its error).
        Raises ``DeferredFailure(DATABASE_UNAVAILABLE)`` when another thread's batch (or the
        lead) does not come within ``wait_seconds``."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            lead = not self._leading
            self._leading = True
        if not lead and not self._await(slot):
            raise DeferredFailure(
                Reason.DATABASE_UNAVAILABLE,
                f"no answer from the batch within {self._wait_seconds:g}s",
            )
        if not slot.done:
            self._lead(slot)
        result = slot.result
        if isinstance(result, _RunAlone):  # the lead is handed on: waiting here holds no one
            result = _single(self._alone, item)
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]  # a batch always sets a result

    def _await(self, slot: _Slot[T, R]) -> bool:
        """Wait for ``slot``'s result or its turn to lead; False when the wait ran out (the
        slot is then withdrawn if no batch has taken it yet)."""
        if slot.woken.wait(self._wait_seconds):
            return True
        with self._lock:  # the lead is handed on under this lock: decide under it too
            if slot.woken.is_set():
                return True
            if slot in self._waiting:
                self._waiting.remove(slot)
        return False

    def _lead(self, own: _Slot[T, R]) -> None:
        try:
            while not own.done:
                with self._lock:
                    count = min(self._max_batch, len(self._waiting))
                    batch = [self._waiting.popleft() for _ in range(count)]
                self._run_batch(batch, own)
        finally:
            # Hand the lead to the oldest waiter, or give it up: never both, never neither.
            with self._lock:
                if self._waiting:
                    self._waiting[0].woken.set()
                else:
                    self._leading = False

    def _run_batch(self, batch: list[_Slot[T, R]], own: _Slot[T, R]) -> None:
        results: Sequence[R | BaseException | _RunAlone]
        self._tell_size(len(batch))
        items = [slot.item for slot in batch]
        try:
            if batch == [own]:
                results = self._run(items)
            else:  # the leader's context (its request_id on every log line) is its item's only
                results = contextvars.Context().run(self._run, items)
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
        except Exception:
            results = [_RUN_ALONE] * len(batch)
        except BaseException as exc:  # interpreter shutdown and the like: tell every waiter
            results = [exc] * len(batch)
        for slot, result in zip(batch, results, strict=True):
            slot.result, slot.done = result, True
            if slot is not own:
                slot.woken.set()

    def _tell_size(self, size: int) -> None:
        # Outside the batch's try on purpose: a failing observer must not re-run the batch.
        if self._observe is None:
            return
        try:
            self._observe(size)
        except Exception:  # metrics are best effort; the waiters must still get their results
            log.exception("the batch-size observer failed; ignored")


def _single(run: BatchRunner[T, R], item: T) -> R | BaseException:
    results = run([item])
    if len(results) != 1:
        raise RuntimeError(f"a batch of 1 got {len(results)} results")
    return results[0]
