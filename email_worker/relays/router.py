"""``RelayRouter``: the ``Mailer`` over several relays, each behind its own breaker.

One send tries the available relays in ``selection`` order. A relay that fails in a way that
means it cannot have accepted the message (``failover.fails_over``) hands the message to the
next relay at once, within the same claim, so no attempt is spent; every other outcome ends the
send there (never a second relay after an ambiguous outcome or a refusal of the message).

When no relay takes the message, the outcome is what one relay would have given:

    tried some, all failed          the last failure that is not TLS/AUTH (an attempt spent, as
                                    today), or, when TLS/AUTH failed on *every* relay, the last
                                    of those (a deferral that pauses consumption)
    tried none (all resting)        DeferredFailure(SMTP_UNAVAILABLE): no attempt spent (an
                                    open breaker); SystemicFailure when TLS/AUTH is what put
                                    every relay to rest (consumption pauses, as with one relay)

Every try is reported to ``observe(relay, result)`` (``email_worker_sends_total``). Failures
carry the relay's name in ``WorkerFailure.relay``; a throttling answer about the relay is
relabelled to the route ``relay:<name>`` so the pacer slows that relay only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from email_worker.ports import Accepted, OutgoingEmail, Sent
from email_worker.relays.breaker import Health, RelayBreaker
from email_worker.relays.failover import fails_over, health, relabel_throttling, result
from email_worker.relays.selection import RelayOrder
from schemas.failures import (
    DeferredFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    WorkerFailure,
)

log = logging.getLogger(__name__)

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
        for position in self._order.order(available):
            relay = self._relays[position]
            outcome = self._try(relay, email)
            if isinstance(outcome, Sent):
                return outcome
            if outcome is not None:
                failures.append(outcome)
        raise self._nobody_took_it(failures)

    def _try(self, relay: Relay, email: OutgoingEmail) -> Sent | WorkerFailure | None:
        """Send through ``relay``: what it accepted, the failure that lets the next relay try,
        or None when the relay could not be tried after all (its one trial was taken by
        another thread meanwhile). Raises every failure that ends the send here."""
        breaker = _breaker(relay)
        ticket = breaker.begin()
        if ticket is None:
            return None
        try:
            reply = relay.transport.send(email)
        except WorkerFailure as failure:
            failure.relay = relay.name
            verdict = health(failure)
            breaker.end(ticket, verdict)
            self._observe(relay.name, result(failure))
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
                return failure
            if verdict is Health.HEALTHY:
                self._remember(relay, None)
            relabel_throttling(failure, relay.name)
            raise
        except BaseException:  # a bug in a transport: nothing is known of the relay
            breaker.end(ticket, Health.NEUTRAL)
            raise
        breaker.end(ticket, Health.HEALTHY)
        self._remember(relay, None)
        self._observe(relay.name, "sent")
        if isinstance(reply, Accepted):
            return Sent(reply.reply, relay.name, reply.provider_message_id)
        return Sent(reply, relay.name)

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
