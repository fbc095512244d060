"""``RelayRouter``: the ``Mailer`` over several relays, each behind its own breaker.

One send tries the available relays in ``selection`` order. Right before handing the message
to a relay's transport, it waits for that relay's turn (``RelayPacer.wait_relay``: the route
``relay:<name>``, limited by its ``?rate=`` or after it throttled); a turn further away than a
thread may wait passes the message to the next relay, as if the relay were resting (no breaker
failure, no attempt). A relay that fails in a way that means it cannot have accepted the
message (``failover.fails_over``) hands the message to the next relay at once, within the same
claim, so no attempt is spent; every other outcome ends the send there (never a second relay
after an ambiguous outcome or a refusal of the message).

When no relay takes the message, the outcome is what one relay would have given:

    tried some, all failed          the last failure that is not TLS/AUTH (an attempt spent, as
                                    today), or, when TLS/AUTH failed on *every* relay, the last
                                    of those (a deferral that pauses consumption)
    tried none (all resting)        DeferredFailure(SMTP_UNAVAILABLE): no attempt spent (an
                                    open breaker); SystemicFailure when TLS/AUTH is what put
                                    every relay to rest (consumption pauses, as with one relay)
    a relay's turn was too far      that refusal (a ThrottledFailure, the soonest when several):
                                    deferred without an attempt until the relay's turn, even
                                    when the other relays failed (this one works, it is busy)

Every try is reported to ``observe(relay, result)`` (``email_worker_sends_total``; a turn too
far is no try) and to ``RelayPacer.report_relay``. Failures carry the relay's name in
``WorkerFailure.relay``; a throttling answer about the relay is relabelled to the route
``relay:<name>`` so the pacer slows that relay only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from email_worker.pacing.routes import relay_route
from email_worker.ports import Accepted, NoRelayPacer, OutgoingEmail, RelayPacer, Sent
from email_worker.relays.breaker import Health, RelayBreaker, Ticket
from email_worker.relays.failover import fails_over, health, relabel_throttling, result
from email_worker.relays.selection import RelayOrder
from schemas.failures import (
    DeferredFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    WorkerFailure,
)

log = logging.getLogger(__name__)

# How long a send waits for a throttled relay's turn while another relay could take it.
SPILL_PATIENCE_SECONDS = 0.25

SendObserver = Callable[[str, str], None]  # (relay name, result)


class RelayTransport(Protocol):
    """One relay's way of sending: the SMTP adapter, an HTTP provider, the sandbox."""

    def send(self, email: OutgoingEmail) -> str | Accepted:
        """Send once; return the final reply (with the provider's id of the message, for an
        HTTP API provider). Raises ``schemas.failures`` errors only, with
        ``RelayUnavailable`` (or ``SystemicFailure``) exactly when the relay cannot have
        accepted the message."""
        ...

    def close(self) -> None: ...


@dataclass
class Relay:
    """A configured relay: its name, weight (None: none given) and transport."""

    name: str
    transport: RelayTransport
    weight: int | None = None
    breaker: RelayBreaker | None = None  # set by the router
    last_failure: WorkerFailure | None = field(default=None, repr=False)


class RelayRouter:
    """Thread-safe: any number of sends at once."""

    def __init__(
        self,
        relays: Sequence[Relay],
        *,
        fail_max: int,
        reset_seconds: float,
        observe: SendObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        pacer: RelayPacer | None = None,
    ) -> None:
        if not relays:
            raise ValueError("a router needs at least one relay")
        self._relays = list(relays)
        for relay in self._relays:
            relay.breaker = RelayBreaker(
                fail_max=fail_max, reset_seconds=reset_seconds, clock=clock
            )
        self._order = RelayOrder([relay.weight for relay in self._relays])
        self._observe = observe or (lambda name, outcome: None)
        self._pacer: RelayPacer = pacer or NoRelayPacer()
        self._lock = threading.Lock()  # guards ``last_failure``

    @property
    def relays(self) -> list[Relay]:
        return list(self._relays)

    def breaker_states(self) -> dict[str, str]:
        """Each relay's breaker: ``closed``, ``open`` or ``half-open``, by name."""
        return {relay.name: _breaker(relay).state for relay in self._relays}

    def send(self, email: OutgoingEmail) -> Sent:
        """See the module docstring."""
        available = [i for i, relay in enumerate(self._relays) if _breaker(relay).available()]
        failures: list[WorkerFailure] = []
        turns_refused: list[ThrottledFailure] = []
        order = self._order.order(available)
        for index, position in enumerate(order):
            relay = self._relays[position]
            # With another relay still to try, a throttled relay's turn is waited for briefly
            # only: the next relay takes the message instead of a thread idling behind it.
            patience = SPILL_PATIENCE_SECONDS if index < len(order) - 1 else None
            outcome = self._try(relay, email, patience)
            if isinstance(outcome, Sent):
                return outcome
            if isinstance(outcome, ThrottledFailure):
                turns_refused.append(outcome)
            elif outcome is not None:
                failures.append(outcome)
        if turns_refused:  # a relay that works will take it: wait for the soonest turn
            raise min(turns_refused, key=lambda refused: refused.retry_after or 0.0)
        raise self._nobody_took_it(failures)

    def _try(
        self, relay: Relay, email: OutgoingEmail, patience: float | None = None
    ) -> Sent | WorkerFailure | None:
        """Send through ``relay``: what it accepted, the failure that lets the next relay try
        (a ``ThrottledFailure`` when the relay's turn is too far away), or None when the relay
        could not be tried after all (its one trial was taken by another thread meanwhile).
        Raises every failure that ends the send here."""
        breaker = _breaker(relay)
        ticket = breaker.begin()
        if ticket is None:
            return None
        refused = self._turn(relay, ticket, email.priority, patience)
        if refused is not None:
            return refused
        try:
            reply = relay.transport.send(email)
        except WorkerFailure as failure:
            if self._failed(relay, ticket, failure):
                return failure
            raise
        except BaseException:  # a bug in a transport: nothing is known of the relay
            breaker.end(ticket, Health.NEUTRAL)
            raise
        breaker.end(ticket, Health.HEALTHY)
        self._remember(relay, None)
        self._observe(relay.name, "sent")
        self._pacer.report_relay(relay.name, None)
        if isinstance(reply, Accepted):
            return Sent(reply.reply, relay.name, reply.provider_message_id)
        return Sent(reply, relay.name)

    def _turn(
        self, relay: Relay, ticket: Ticket, priority: int, patience: float | None
    ) -> ThrottledFailure | None:
        """Wait for the relay's turn (``RelayPacer.wait_relay``): None once it came, the
        refusal when it is too far away. A refusal is no failure of the relay: its breaker
        hears nothing (a trial ticket goes back unused). Raises the refusal of another route
        (a fresh ``RATE_LIMIT`` slot too far: no relay could send sooner) and what the store
        raises when it cannot be reached (``DeferredFailure``)."""
        try:
            self._pacer.wait_relay(relay.name, priority, patience)
        except ThrottledFailure as refused:
            _breaker(relay).end(ticket, Health.NEUTRAL)
            if refused.route == relay_route(relay.name):
                return refused
            raise
        except BaseException:
            _breaker(relay).end(ticket, Health.NEUTRAL)
            raise
        return None

    def _failed(self, relay: Relay, ticket: Ticket, failure: WorkerFailure) -> bool:
        """Record what the relay's failure says (breaker, counts, pacer); True when the next
        relay may take the message (``failover.fails_over``)."""
        failure.relay = relay.name
        verdict = health(failure)
        _breaker(relay).end(ticket, verdict)
        self._observe(relay.name, result(failure))
        relabel_throttling(failure, relay.name)
        self._pacer.report_relay(relay.name, failure)
        if fails_over(failure):
            self._remember(relay, failure)
            log.warning(
                "relay could not take the message: trying the next relay",
                extra={
                    "relay": relay.name,
                    "reason": str(failure.reason),
                    "detail": failure.detail,
                },
            )
            return True
        if verdict is Health.HEALTHY:
            self._remember(relay, None)
        return False

    def close(self) -> None:
        for relay in self._relays:
            relay.transport.close()

    def _remember(self, relay: Relay, failure: WorkerFailure | None) -> None:
        """Keep the failure that put ``relay`` to rest (None once it answers again)."""
        with self._lock:
            relay.last_failure = failure

    def _nobody_took_it(self, failures: list[WorkerFailure]) -> WorkerFailure:
        """The failure of a send that no relay took (see the module docstring)."""
        with self._lock:
            resting = [r.last_failure for r in self._relays if r.last_failure is not None]
        everywhere_systemic = all(
            isinstance(f, SystemicFailure) for f in [*failures, *resting]
        ) and bool(failures or resting)
        if failures:
            if everywhere_systemic:
                return failures[-1]
            plain = [f for f in failures if not isinstance(f, SystemicFailure)]
            if plain:
                return plain[-1]
            return RelayUnavailable(Reason.SMTP_UNAVAILABLE, _summary(self._relays))
        if everywhere_systemic:
            last = resting[-1]
            return SystemicFailure(last.reason, f"every relay rests after: {last.detail}")
        return DeferredFailure(Reason.SMTP_UNAVAILABLE, _summary(self._relays))


def _breaker(relay: Relay) -> RelayBreaker:
    assert relay.breaker is not None  # the router sets every relay's breaker
    return relay.breaker


def _summary(relays: list[Relay]) -> str:
    """``every relay rests behind its breaker or failed: a, b``: names only, no credentials."""
    return "no relay could take it (resting or failed): " + ", ".join(r.name for r in relays)
