"""What a report does, whichever provider sent it: suppress, tie back, count.

- ``hard_bounce``, ``complaint`` and ``unsubscribe`` add the address to the suppression list
  (reason ``hard_bounce``, ``complaint``, ``unsubscribe``; source the provider);
- ``hard_bounce`` and ``complaint`` tied to a request we sent (by our ``Message-ID`` or a
  provider id we recorded) turn that request ``bounced`` / ``complained`` and enqueue its
  ``failed`` callback (``bounced: <code> <detail>``), handed to the notifier at once;
- ``soft_bounce`` changes nothing but a counter.

Whom to suppress depends on who vouches for the report. A provider's signed webhook names the
address itself: it is suppressed whether or not the report ties to a request. A raw DSN or ARF
report is mail from anywhere (the bearer token only proves it came through the operator's
pipe), so it acts only through the request its ``Message-ID`` ties it to, and what is
suppressed is the address *that request was sent to*: our Message-IDs are keyed hashes, so a
stranger cannot forge a report for someone else's address, and a complaint whose recipient is
redacted (most ISPs redact it) still suppresses the right address.

Every effect is idempotent (the list keeps one entry per address; a request moves to
``bounced`` once), so a provider retrying after a failure (``DeferredFailure`` → 503) redoes
nothing twice.

One call of ``take`` (one webhook POST: SendGrid sends thousands of events in one) is decided
here report by report (an ``Intent`` each) and recorded by the ledger all at once when it can
(``BatchLedger``, ``PgReportLedger``): one transaction, a few statements per chunk, each report
with exactly the effect it has alone, in order. Nothing is kept when it fails, and callbacks
are handed over only after it committed. A ledger that ties one report at a time (the unit
tests' fake) gets the reports one by one, through the ``SuppressionList``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from email_worker.ports import Notifier
from email_worker.reports.model import REQUEST_STATUS, SUPPRESSES, Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tied:
    """The request a report was tied to: its recipient as sent, whether this report changed
    its status, and the callback row to hand over (None: no change or no callback URL)."""

    request_id: str
    recipient: str | None
    changed: bool
    outbox_id: int | None


class ReportLedger(Protocol):
    def tie(self, report: Report, status: str, error: str) -> Tied | None:
        """Find the request ``report`` is about; move it from ``sent`` or ``unknown`` to
        ``status`` with an event and a ``failed`` callback carrying ``error``. None when no
        request matches. Raises ``DeferredFailure`` when Postgres is unavailable."""
        ...


@dataclass(frozen=True)
class Intent:
    """What one report asks of the stores. ``status`` (None: do not tie): the request status
    to record, with the callback's ``error``; ``reason`` (None: suppress nothing): the
    suppression reason, for ``address`` when the provider vouches for it, or for the tied
    request's recipient when ``via_request``."""

    report: Report
    status: str | None
    error: str
    reason: str | None
    address: str | None
    via_request: bool

    @classmethod
    def of(cls, report: Report, vouched: bool) -> Intent:
        """What ``report`` asks for when ``vouched`` (or not): see the module docstring."""
        reason, status = SUPPRESSES.get(report.kind), REQUEST_STATUS.get(report.kind)
        if not (report.message_ids or report.provider_ids):
            status = None  # nothing to tie it by
        error = ""
        if status is not None:
            error = f"{status}: {report.summary}" if report.summary else status
        address = report.address if vouched else None
        if vouched and address is None:
            reason = None  # a signed report naming no address suppresses nothing
        return cls(report, status, error, reason, address, via_request=not vouched)

    def suppresses(self, tied: Tied | None) -> str | None:
        """The address this report suppresses once tied (or not) as ``tied``; None: none."""
        if self.reason is None:
            return None
        if self.via_request:
            return tied.recipient if tied is not None and tied.recipient else None
        return self.address


@runtime_checkable
class BatchLedger(Protocol):
    def record(self, source: str, intents: Sequence[Intent]) -> list[Tied | None]:
        """Apply every intent from ``source`` in one transaction, in order, each as ``tie``
        and ``SuppressionList.add`` would alone: the ``Tied`` of each (None: not tied). Nothing
        is kept when it raises (``DeferredFailure``, ``SchemaBehind``, ``ValueError``)."""
        ...


class SuppressionList(Protocol):
    def add(self, address: str, reason: str, source: str, detail: str = "") -> None:
        """Add or refresh an entry (``SuppressionStore.add``)."""
        ...


@dataclass(frozen=True)
class Outcome:
    reports: int = 0
    suppressed: int = 0
    tied: int = 0

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.reports + other.reports,
            self.suppressed + other.suppressed,
            self.tied + other.tied,
        )

    def body(self) -> dict[str, object]:
        return {
            "status": "accepted",
            "reports": self.reports,
            "suppressed": self.suppressed,
            "tied": self.tied,
        }


class ReportIntake:
    """Applies reports. ``count(provider, kind)`` is the metric hook; never raises except
    ``DeferredFailure`` (and ``SchemaBehind``) from the stores. With a ``BatchLedger`` the
    ledger writes the suppression entries itself, in its transaction, and ``suppressions`` is
    not used."""

    def __init__(
        self,
        ledger: ReportLedger,
        suppressions: SuppressionList,
        notifier: Notifier,
        count: Callable[[str, str], None] = lambda provider, kind: None,
    ) -> None:
        self._ledger = ledger
        self._batches = ledger if isinstance(ledger, BatchLedger) else None
        self._suppressions = suppressions
        self._notifier = notifier
        self._count = count

    def take(self, source: str, reports: Sequence[Report], *, vouched: bool) -> Outcome:
        """Apply each report from ``source`` (``ses``, ``dsn``...). ``vouched``: the provider
        signed the address itself (see the module docstring)."""
        intents = [Intent.of(report, vouched) for report in reports]
        acting = any(intent.status or intent.reason for intent in intents)
        if not acting:
            found: list[Tied | None] = [None] * len(intents)
        elif self._batches is not None:
            found = self._batches.record(source, intents)
        else:
            found = [self._one(source, intent) for intent in intents]
        total = Outcome()
        for intent, tied in zip(intents, found, strict=True):
            total += self._taken(source, intent, tied)
        return total

    def _one(self, source: str, intent: Intent) -> Tied | None:
        """One report through a ledger that ties one at a time (each call its own
        transaction)."""
        if intent.reason is not None and intent.address is not None:
            self._suppressions.add(intent.address, intent.reason, source, intent.report.summary)
        tied = None
        if intent.status is not None:
            tied = self._ledger.tie(intent.report, intent.status, intent.error)
        address = intent.suppresses(tied)
        if intent.reason is not None and intent.via_request and address is not None:
            self._suppressions.add(address, intent.reason, source, intent.report.summary)
        if tied is not None and tied.outbox_id is not None:
            self._notifier.hand_over(tied.outbox_id)
        return tied

    def _taken(self, source: str, intent: Intent, tied: Tied | None) -> Outcome:
        """Hand over the callback (once recorded, when batched), count and log one report."""
        if self._batches is not None and tied is not None and tied.outbox_id is not None:
            self._notifier.hand_over(tied.outbox_id)
        suppressed = intent.suppresses(tied) is not None
        report = intent.report
        self._count(source, report.kind.value)
        log.info(
            "report taken",
            extra={
                "source": source,
                "kind": report.kind.value,
                "request_id": tied.request_id if tied else None,
                "status_changed": bool(tied and tied.changed),
                "suppressed": suppressed,
            },
        )
        return Outcome(1, int(suppressed), 1 if tied else 0)
