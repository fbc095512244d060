"""``RoutePacer``: the ``Pacer`` and ``RelayPacer`` ports over the shared store (CONTRACT 12).

Which routes a send waits for, in this order: its recipient domain's (``domain:<d>``, when
``DOMAIN_RATE_LIMITS`` names it or the domain was throttled) and ``relay`` (``RATE_LIMIT``, or
a throttle reported without a relay's name) in the pipeline's ``wait_turn``; then, once the
relay router chose the relay, that relay's own route (``relay:<name>``, when ``RELAYS`` gave it
a ``?rate=`` or it throttled) in ``wait_relay``. A throttled relay therefore slows the sends
through it only, and when its turn is too far away the router may hand the message to another
relay instead. ``relay`` comes last in ``wait_turn`` so that a send leaves right after the
``RATE_LIMIT`` slot it took; should the relay's own wait then make that slot stale, the send
takes a fresh one (``RATE_LIMIT`` holds exactly; the stale slot is lost to the rate).

Zero cost when unset: with no limit configured and no throttle seen, ``wait_turn`` and
``wait_relay`` return after a couple of look-ups and no store is ever called. Once a route is
limited or throttled, the pacer reads the store's throttled routes about once a second (on a
sending thread, one at a time, off the lock), so that a throttle one replica heard slows every
replica within a second.

``report`` and ``report_relay`` turn a ``ThrottledFailure`` into one debounced halving in the
store (and a pause when the answer advised one), drop this replica's slots of that route
(reserved at the old rate) and count it; a success feeds the observed rate a first halving
starts from. A ``TurnRefused`` (this replica's own refusal of a slot) slows nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from email_worker.pacing.adaptive import Recovery, RouteState, SuccessMeter, rate_in_force
from email_worker.pacing.limiter import RouteLimiter, TurnRefused, Wait, condition_wait
from email_worker.pacing.routes import (
    RELAY,
    RELAY_PREFIX,
    RouteLabels,
    domain_route,
    relay_route,
    route_of,
)
from email_worker.pacing.store import RateStore, Snapshot, StoreClock
from schemas.failures import AmbiguousDelivery, ThrottledFailure, WorkerFailure

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class PacerConfig:
    relay_rate: float | None  # RATE_LIMIT
    domain_rates: Mapping[str, float]  # DOMAIN_RATE_LIMITS
    max_wait: float = 5.0  # RATE_LIMIT_MAX_WAIT_SECONDS
    margin: float = 0.05  # RATE_LIMIT_MARGIN
    recovery: Recovery = field(default_factory=Recovery)
    relay_rates: Mapping[str, float] = field(default_factory=dict)  # ?rate= by relay name


class PacerEvents(Protocol):
    """What the pacer tells the metrics (``ops.metrics.WorkerMetrics``)."""

    def throttled(self, label: str) -> None:
        """A throttling answer on the route labelled ``label``."""

    def waited(self, seconds: float) -> None:
        """A send waited this long for its slots."""


class NoEvents:
    """Tells nobody."""

    def throttled(self, label: str) -> None:
        return None

    def waited(self, seconds: float) -> None:
        return None


class RoutePacer:
    """Thread-safe ``Pacer`` and ``RelayPacer``: one send's calls (``wait_turn``, then
    ``wait_relay`` and ``report_relay`` per relay tried, then ``report``) come from one thread,
    which keeps the slots it took in a thread-local. ``rates()`` gives the rate in force per
    route label (gauge)."""

    def __init__(
        self,
        config: PacerConfig,
        store: RateStore,
        events: PacerEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Wait = condition_wait,
    ) -> None:
        self._config, self._store = config, store
        self._events: PacerEvents = events or NoEvents()
        self._clock, self._sleep = clock, wait
        self._ceilings: dict[str, float] = {
            domain_route(d): r for d, r in config.domain_rates.items()
        }
        self._ceilings.update({relay_route(n): r for n, r in config.relay_rates.items()})
        if config.relay_rate is not None:
            self._ceilings[RELAY] = config.relay_rate
        self.labels = RouteLabels(set(self._ceilings))
        self._lock = threading.Lock()
        self._limiters: dict[str, RouteLimiter] = {}
        self._throttled: frozenset[str] = frozenset()  # unconfigured routes with a rate now
        self._limited = frozenset(self._ceilings)  # and the configured ones: sends wait for these
        self._late = config.margin / 4  # a slot older than this is stale (``limiter.py``)
        self._states: dict[str, RouteState] = {}  # throttled routes, as the store last said
        self._offset = 0.0  # the store's clock minus ours, as of the store's last answer
        self._meter = SuccessMeter(clock)
        self._refreshing = threading.Lock()
        self._next_refresh = 0.0
        self._halved_at: dict[str, float] = {}  # local debounce: no store call per refusal
        self._store_clock = StoreClock()
        self._turns = threading.local()  # the slots the thread's current send took

    def wait_turn(self, domain: str, priority: int) -> None:
        self._turns.last = ()  # a send that never reported (a bug) leaves no slot behind
        if not self._limited:
            return  # nothing limited, nothing throttled: the usual case costs this
        self._maybe_refresh()
        routes = [r for r in (domain_route(domain), RELAY) if r in self._limited]
        arrived, turns = self._clock(), []
        try:
            for name in routes:
                limiter = self._limiter(name)
                slot = limiter.acquire(priority)
                if slot is not None:
                    turns.append((limiter, slot))
        finally:
            self._turns.last = turns  # this thread's send: report() measures its lateness
            self._count_wait(arrived, bool(turns))

    def wait_relay(self, name: str, priority: int, patience: float | None = None) -> None:
        self._turns.relay = None
        if not self._limited:
            return
        self._maybe_refresh()
        route = relay_route(name)
        if route not in self._limited:
            return
        limiter, arrived = self._limiter(route), self._clock()
        try:
            slot = limiter.acquire(priority, patience)  # raises TurnRefused: the router goes on
            if slot is not None:
                self._turns.relay = (limiter, slot)
                self._refresh_stale_turns(priority)
        finally:
            self._count_wait(arrived, True)

    def report(self, domain: str, failure: WorkerFailure | None) -> None:
        try:
            turns, self._turns.last = getattr(self._turns, "last", ()), ()
            if failure is None or isinstance(failure, AmbiguousDelivery):  # maybe accepted
                self._meter.note((RELAY, domain_route(domain)))
                self._finished(turns)
            elif _answered(failure) and not failure.route.startswith(RELAY_PREFIX):
                self._throttle(route_of(failure.route, domain), failure.retry_after, turns)
        except Exception:  # the send already happened: never fail it for bookkeeping
            log.warning("could not record a send's pacing", exc_info=True)

    def report_relay(self, name: str, failure: WorkerFailure | None) -> None:
        try:
            turn, self._turns.relay = getattr(self._turns, "relay", None), None
            turns = () if turn is None else (turn,)
            route = relay_route(name)
            if failure is None or isinstance(failure, AmbiguousDelivery):
                self._meter.note((route,))
                self._finished(turns)
            elif _answered(failure) and failure.route == route:
                self._throttle(route, failure.retry_after, turns)
        except Exception:
            log.warning("could not record a relay's pacing", exc_info=True)

    def rates(self) -> dict[str, float]:
        """The rate in force per route label: configured routes and throttled ones."""
        with self._lock:
            states, now = dict(self._states), self._clock() + self._offset
        found: dict[str, float] = {}
        for route in set(self._ceilings) | set(states):
            state = states.get(route, RouteState())
            rate = rate_in_force(self._ceilings.get(route), state, now, self._config.recovery)
            label = self.labels.label(route)
            if rate is not None and not label.endswith(":other"):
                found[label] = rate
        return found

    def close(self) -> None:
        self._store.close()

    def _limiter(self, route: str) -> RouteLimiter:
        limiter = self._limiters.get(route)
        if limiter is None:
            with self._lock:
                limiter = self._limiters.get(route)
                if limiter is None:
                    limiter = RouteLimiter(
                        route,
                        self._ceilings.get(route),
                        self._store,
                        max_wait=self._config.max_wait,
                        margin=self._config.margin,
                        clock=self._clock,
                        wait=self._sleep,
                        store_clock=self._store_clock,
                    )
                    self._limiters[route] = limiter
        return limiter

    def _refresh_stale_turns(self, priority: int) -> None:
        """After a wait for a relay's own route: a ``relay`` (``RATE_LIMIT``) slot taken before
        it and now older than a slot may be used is replaced by a fresh one (a send leaving
        that late would bunch with the sends of the slots after it; the stale one is lost to
        the rate). Any other lateness (a refusal of a relay's turn that came after a wait, a
        slow relay) is the push's (``RouteLimiter.finished``). Raises ``TurnRefused``."""
        turns: list[tuple[RouteLimiter, float]] = getattr(self._turns, "last", [])
        for index, (limiter, slot) in enumerate(turns):
            if limiter.route == RELAY and self._clock() - slot > self._late:
                fresh = limiter.acquire(priority)  # None: the route turned unlimited
                turns[index : index + 1] = [] if fresh is None else [(limiter, fresh)]
                return  # one ``relay`` turn per send

    def _finished(self, turns: Sequence[tuple[RouteLimiter, float]]) -> None:
        finished = self._clock()
        for limiter, slot in turns:
            limiter.finished(slot, finished)

    def _count_wait(self, arrived: float, limited: bool) -> None:
        waited = self._clock() - arrived
        if limited and waited > 0:
            self._events.waited(waited)

    def _throttle(
        self, route: str, retry_after: float | None, turns: Sequence[tuple[RouteLimiter, float]]
    ) -> None:
        self._events.throttled(self.labels.label(route))
        if retry_after is None and self._stale(route, turns):
            return  # an advised pause is always taken
        now = self._clock()
        with self._lock:
            recent = now - self._halved_at.get(route, -1e9) < self._config.recovery.debounce
            if recent and retry_after is None:
                return
            self._halved_at[route] = now
        observed = self._meter.rate(route)  # what the route took lately, this replica
        result = self._store.throttle(route, self._ceilings.get(route), observed, retry_after)
        self._limiter(route).drop()
        self._learn(Snapshot(result.now, {route: result.state}), complete=False)
        log.info("route throttled", extra={"route": self.labels.label(route)})

    def _stale(self, route: str, turns: Sequence[tuple[RouteLimiter, float]]) -> bool:
        """A refusal of a send that left before the route's rate in force: the route is
        limited now, but this send took no slot of it since the last halving (it was in
        flight, unlimited or at the old rate). Halving again for it would halve for the same
        overload twice: the relay still counted the sends of the burst that caused the first."""
        if route not in self._throttled and route not in self._ceilings:
            return False
        return not any(limiter.route == route and limiter.fresh(slot) for limiter, slot in turns)

    def _maybe_refresh(self) -> None:
        now = self._clock()
        if now < self._next_refresh or not self._refreshing.acquire(blocking=False):
            return
        try:
            self._next_refresh = now + REFRESH_SECONDS
            self._learn(self._store.snapshot(), complete=True)
        except Exception:  # the limits still hold; only news of throttles waits
            log.warning("could not read the throttled routes", exc_info=True)
        finally:
            self._refreshing.release()

    def _learn(self, snapshot: Snapshot, *, complete: bool) -> None:
        """Take the store's view of throttled routes: which unconfigured routes now have a
        rate (so sends wait for them) and the states behind the gauge."""
        recovery = self._config.recovery
        with self._lock:
            self._offset = snapshot.now - self._clock()
            if complete:
                self._states = {}
            self._states.update(snapshot.routes)
            self._throttled = frozenset(
                route
                for route, state in self._states.items()
                if route not in self._ceilings
                and rate_in_force(None, state, snapshot.now, recovery) is not None
            )
            self._limited = self._throttled | frozenset(self._ceilings)


def _answered(failure: WorkerFailure) -> TypeGuard[ThrottledFailure]:
    """A throttling answer heard from a relay, not this replica's own refusal of a slot."""
    return isinstance(failure, ThrottledFailure) and not isinstance(failure, TurnRefused)
