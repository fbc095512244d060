"""The pure half of the ledger checker: what a request's observations make of it.

``classify`` puts every request in exactly one class (``delivered_once``, ``dead_lettered``,
``duplicated``, ``cancelled``, ``lost``, ``unexpected``) from what the relay, ``failed.queue``,
the ledger and the callbacks showed; ``tests/support/ledger_check.py`` collects those
observations from the real services. No I/O here, so the rules are unit-tested with synthetic
observations.

The delivery-policy rules (CONTRACT 12, 14): a request cancelled before it was sent is
``cancelled`` (the ledger says ``failed``/``cancelled``, nothing reached the relay; a dead letter
with reason ``cancelled`` counts as ``dead_lettered``); a copy received before the request's
``not_before`` (its ``send_at``, by the relay's clock) is unexpected; a delivery whose only
retries were throttling deferrals (and 4xx answers) spent no attempt for them: the ledger's
``attempts`` is 1 plus the 4xx answers, and no ``pending`` callback was sent for a deferral.
A dead letter without a reason is unexpected. ``expect`` may name alternatives: ``a|b``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

KEY_HEADER = "ledger_check_key"  # identifies a request whose body carries no readable id
DELIVERED = "delivered"  # the expectation "delivered once (or an allowed duplicate)"
ANY = "any"  # the expectation "any passing class"
AMBIGUOUS_EVENTS = frozenset({"unknown", "taken_over", "lease_expired"})
OUTCOMES = ("delivered_once", "dead_lettered", "duplicated", "cancelled", "lost", "unexpected")
CANCELLED = "cancelled"  # the ledger's failure reason, and the expectation, of a cancel
THROTTLED = "throttled"  # the retry reason of a throttling deferral (spends no attempt)
COUNTED_4XX = "smtp_transient"  # a 4xx answer: spends an attempt


@dataclass(frozen=True)
class Request:
    """One published request; ``expect`` is ``delivered``, ``any`` or a dead-letter reason."""

    key: str
    recipient: str | None
    expect: str = DELIVERED
    not_before: float | None = None  # epoch seconds (its send_at): no copy may arrive earlier


@dataclass(frozen=True)
class Copy:
    """One message the relay holds; ``ambiguous``: the client was never told it was accepted."""

    recipient: str
    message_id: str | None
    ambiguous: bool = False
    received_at: float | None = None  # epoch seconds, by the relay's clock


@dataclass(frozen=True)
class DeadLetter:
    key: str | None
    reason: str


@dataclass(frozen=True)
class LedgerRow:
    status: str
    message_id: str | None = None
    events: tuple[str, ...] = ()
    reason: str | None = None  # failure_reason
    attempts: int | None = None
    retry_reasons: tuple[str, ...] = ()  # the reasons of its ``pending`` events, in order


@dataclass(frozen=True)
class Observations:
    copies: Sequence[Copy]
    dead_letters: Sequence[DeadLetter]
    ledger: Mapping[str, LedgerRow]
    callbacks: Mapping[str, Sequence[str]] | None = None  # key → statuses in arrival order
    # Check the ledger's ``attempts`` of throttled deliveries (False: only their callbacks).
    attempts_checked: bool = True


@dataclass(frozen=True)
class Verdict:
    key: str
    outcome: str
    detail: str = ""
    copies: int = 0
    dead_letters: int = 0


@dataclass
class Report:
    verdicts: list[Verdict]
    strays: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        counts = Counter({name: 0 for name in OUTCOMES})
        counts.update(v.outcome for v in self.verdicts)
        counts["unexpected"] += len(self.strays)
        return counts

    @property
    def ok(self) -> bool:
        return self.counts["lost"] == 0 and self.counts["unexpected"] == 0

    def of(self, key: str) -> Verdict:
        return next(v for v in self.verdicts if v.key == key)

    def summary(self) -> str:
        """Counts, then every request that did not pass and every stray, one per line."""
        counts = dict(self.counts)
        lines = [json.dumps(counts)]
        lines += [f"{v.key}: {v.outcome} {v.detail}" for v in self.verdicts if v.outcome in _BAD]
        lines += [f"stray: {stray}" for stray in self.strays]
        return "\n".join(lines)


_BAD = ("lost", "unexpected")


def classify(requests: Sequence[Request], seen: Observations) -> Report:
    """Put every request in exactly one class (module docstring). Pure."""
    by_recipient = {r.recipient.lower(): r.key for r in requests if r.recipient}
    copies: dict[str, list[Copy]] = {r.key: [] for r in requests}
    dead: dict[str, list[DeadLetter]] = {r.key: [] for r in requests}
    strays: list[str] = []
    for copy in seen.copies:
        key = by_recipient.get(copy.recipient.lower())
        if key is None:
            strays.append(f"an email to a recipient of no request ({copy.message_id})")
        else:
            copies[key].append(copy)
    for letter in seen.dead_letters:
        if letter.key in dead:
            dead[letter.key].append(letter)
        else:
            strays.append(f"a dead letter of no request ({letter.key}, {letter.reason})")
    verdicts = []
    for request in requests:
        verdict = _verdict(request, copies[request.key], dead[request.key], seen)
        verdicts.append(verdict)
    return Report(verdicts, strays)


def _verdict(
    request: Request, copies: list[Copy], dead: list[DeadLetter], seen: Observations
) -> Verdict:
    row = seen.ledger.get(request.key)
    outcome, detail = _place(copies, dead, row, request.expect)
    if outcome not in _BAD:
        outcome, detail = _against_expectation(request, outcome, detail, dead)
    if outcome not in _BAD and seen.callbacks is not None and row is not None:
        outcome, detail = _against_callbacks(outcome, detail, seen.callbacks.get(request.key, ()))
    if outcome not in _BAD:
        outcome, detail = _against_policy(request, outcome, detail, copies, row, seen)
    return Verdict(request.key, outcome, detail, len(copies), len(dead))


def _place(
    copies: list[Copy], dead: list[DeadLetter], row: LedgerRow | None, expect: str = ANY
) -> tuple[str, str]:
    """Where the request ended, judged from the relay, the dead letters and the ledger."""
    status = row.status if row else "no ledger row"
    ambiguous = bool(row and (row.status == "unknown" or AMBIGUOUS_EVENTS & set(row.events)))
    cancelled = bool(row and row.status == "failed" and row.reason == CANCELLED)
    if not copies:
        if dead:
            return _dead(dead, expect)
        if cancelled:
            return CANCELLED, ""
        return "lost", f"no email and no dead letter (ledger: {status})"
    if cancelled:
        return "unexpected", f"cancelled, but the relay holds {len(copies)} copies"
    if dead:
        if any(not c.ambiguous for c in copies):
            return "unexpected", f"delivered and dead-lettered ({dead[0].reason})"
        if not ambiguous:
            return "unexpected", "the relay holds an unacknowledged copy, the ledger no unknown"
        outcome, detail = _dead(dead, expect)
        return outcome, f"{detail}; the relay may hold {len(copies)} ambiguous copies"
    return _delivered(copies, row, ambiguous or any(c.ambiguous for c in copies))


def _delivered(copies: list[Copy], row: LedgerRow | None, ambiguous: bool) -> tuple[str, str]:
    ids = {c.message_id for c in copies}
    if len(ids) != 1 or None in ids:
        return "unexpected", f"{len(copies)} copies with {len(ids)} Message-IDs"
    if row is None or row.status != "sent":
        status = row.status if row else "nothing"
        return "unexpected", f"the relay holds it, the ledger says {status}"
    if row.message_id not in ids:
        return "unexpected", "the ledger's Message-ID differs from the relay's"
    if len(copies) == 1:
        return "delivered_once", ""
    if ambiguous:
        return "duplicated", f"{len(copies)} copies after an ambiguous outcome, one Message-ID"
    return "unexpected", f"{len(copies)} copies without an ambiguous outcome"


def _dead(dead: list[DeadLetter], expect: str) -> tuple[str, str]:
    """Dead letters of one request: one reason, or several that the expectation all names
    (``a|b``: a redelivery may meet what the first try changed, e.g. the suppression a 5.1.1
    added)."""
    reasons = sorted({d.reason or "" for d in dead})
    if "" in reasons:
        return "unexpected", f"a dead letter without a reason ({len(dead)} records)"
    if len(reasons) > 1 and not set(reasons) <= set(expect.split("|")):
        return "unexpected", f"dead-lettered with different reasons: {reasons}"
    copies = f" ({len(dead)} records)" if len(dead) > 1 else ""
    return "dead_lettered", f"{'+'.join(reasons)}{copies}"


def _against_expectation(
    request: Request, outcome: str, detail: str, dead: list[DeadLetter]
) -> tuple[str, str]:
    if request.expect == ANY:
        return outcome, detail
    delivered = outcome in ("delivered_once", "duplicated")
    for expected in request.expect.split("|"):
        if expected == DELIVERED and delivered:
            return outcome, detail
        if expected == CANCELLED and outcome == CANCELLED:
            return outcome, detail
        if outcome == "dead_lettered" and dead[0].reason == expected:
            return outcome, detail
    return "unexpected", f"expected {request.expect}, got {outcome}: {detail}"


_FINAL = {
    "delivered_once": "delivered",
    "duplicated": "delivered",
    "dead_lettered": "failed",
    CANCELLED: "failed",
}


def _against_callbacks(outcome: str, detail: str, statuses: Sequence[str]) -> tuple[str, str]:
    """The last callback matches the outcome and none follows a different final status."""
    for earlier, later in itertools.pairwise(statuses):
        if earlier in ("delivered", "failed") and later != earlier:
            return "unexpected", f"callbacks moved backwards: {list(statuses)}"
    if not statuses or statuses[-1] != _FINAL[outcome]:
        return "unexpected", f"{outcome} but callbacks were {list(statuses)}"
    return outcome, detail


def _against_policy(
    request: Request,
    outcome: str,
    detail: str,
    copies: list[Copy],
    row: LedgerRow | None,
    seen: Observations,
) -> tuple[str, str]:
    """Not sent before ``not_before``; throttling spent no attempt and sent no ``pending``."""
    if request.not_before is not None:
        early = [c.received_at for c in copies if c.received_at is not None]
        if early and min(early) < request.not_before:
            ahead = request.not_before - min(early)
            return "unexpected", f"sent {ahead:.3f} s before its send_at"
    if outcome != "delivered_once" or row is None or THROTTLED not in row.retry_reasons:
        return outcome, detail
    if AMBIGUOUS_EVENTS & set(row.events) or not set(row.retry_reasons) <= {
        THROTTLED,
        COUNTED_4XX,
    }:
        return outcome, detail  # other retries (a kill, a database down): not judged here
    spent = 1 + row.retry_reasons.count(COUNTED_4XX)
    if seen.attempts_checked and row.attempts is not None and row.attempts != spent:
        return "unexpected", f"throttled: the ledger counts {row.attempts} attempts, not {spent}"
    statuses = seen.callbacks.get(request.key, ()) if seen.callbacks is not None else ()
    if list(statuses).count("pending") > row.retry_reasons.count(COUNTED_4XX):
        return "unexpected", f"a pending callback for a throttling deferral: {list(statuses)}"
    return outcome, detail
