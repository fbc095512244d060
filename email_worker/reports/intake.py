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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    ``DeferredFailure`` (and ``SchemaBehind``) from the stores."""

    def __init__(
        self,
        ledger: ReportLedger,
        suppressions: SuppressionList,
        notifier: Notifier,
        count: Callable[[str, str], None] = lambda provider, kind: None,
    ) -> None:
        self._ledger = ledger
        self._suppressions = suppressions
        self._notifier = notifier
        self._count = count

    def take(self, source: str, reports: Sequence[Report], *, vouched: bool) -> Outcome:
        """Apply each report from ``source`` (``ses``, ``dsn``...). ``vouched``: the provider
        signed the address itself (see the module docstring)."""
        total = Outcome()
        for report in reports:
            total += self._one(source, report, vouched)
            self._count(source, report.kind.value)
        return total

    def _one(self, source: str, report: Report, vouched: bool) -> Outcome:
        reason, status = SUPPRESSES.get(report.kind), REQUEST_STATUS.get(report.kind)
        suppressed = 0
        if vouched and reason is not None and report.address is not None:
            self._suppressions.add(report.address, reason, source, report.summary)
            suppressed = 1
        tied = None
        if status is not None and (report.message_ids or report.provider_ids):
            error = f"{status}: {report.summary}" if report.summary else status
            tied = self._ledger.tie(report, status, error)
        if not vouched and reason is not None and tied is not None and tied.recipient:
            self._suppressions.add(tied.recipient, reason, source, report.summary)
            suppressed = 1
        if tied is not None and tied.outbox_id is not None:
            self._notifier.hand_over(tied.outbox_id)
        log.info(
            "report taken",
            extra={
                "source": source,
                "kind": report.kind.value,
                "request_id": tied.request_id if tied else None,
                "status_changed": bool(tied and tied.changed),
                "suppressed": bool(suppressed),
            },
        )
        return Outcome(1, suppressed, 1 if tied else 0)
