"""In-memory fakes of the core's ports (email_worker/ports.py), for fast unit tests.

They keep the ports' contracts (claim semantics, fencing, classified errors) so a unit test
of the pipeline fails for the same reasons an integration test would.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from email_worker.ports import (
    AlreadySent,
    Claim,
    LedgerStatus,
    OutgoingEmail,
    Recipient,
    Record,
    Sent,
)
from email_worker.reports.intake import Tied
from email_worker.reports.model import Report
from schemas.failures import DeferredFailure, PermanentFailure, Reason, WorkerFailure
from schemas.request import EmailRequest
from templates_client.template import Template


@dataclass
class _Row:
    payload_hash: str
    status: LedgerStatus
    lease: str | None
    attempts: int = 0
    records: list[Record] = field(default_factory=list)


def email_request(
    request_id: str | None = None, payload_hash: str = "hash-1", batch_id: str | None = "batch-7"
) -> EmailRequest:
    """A valid normalised request with a fresh id unless one is given."""
    rid = request_id or f"req-{uuid.uuid4().hex[:8]}"
    return EmailRequest(
        request_id=rid,
        notification_id=f"n-{rid}",
        correlation_id=f"c-{rid}",
        template_code="welcome",
        recipient="ada@example.com",
        payload_hash=payload_hash,
        batch_id=batch_id,
    )


class FakeLedger:
    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.rejections: list[tuple[str, Reason]] = []
        self.outbox: list[tuple[str, str]] = []  # (request_id, callback status)
        self.fail_finish: WorkerFailure | None = None
        # What the ledger classifies at the claim (a redelivery limit): carried by the Claim.
        self.claim_failure: WorkerFailure | None = None
        self._ids = itertools.count(1)

    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        row = self.rows.get(request.request_id)
        if row is None:
            row = _Row(request.payload_hash, LedgerStatus.PENDING, None)
            self.rows[request.request_id] = row
        if row.payload_hash != request.payload_hash:
            raise PermanentFailure(Reason.IDEMPOTENCY_CONFLICT, "payload differs")
        if row.status == LedgerStatus.SENT:
            return AlreadySent(request.request_id, None)
        if row.status == LedgerStatus.SENDING:
            raise DeferredFailure(Reason.LEASE_BUSY, "held by another worker")
        row.status, row.lease = LedgerStatus.SENDING, uuid.uuid4().hex
        row.attempts += 1
        return Claim(request.request_id, row.lease, row.attempts, failure=self.claim_failure)

    def finish(self, claim: Claim, request: EmailRequest, record: Record) -> int | None:
        if self.fail_finish is not None:
            raise self.fail_finish
        row = self.rows[claim.request_id]
        if row.lease != claim.lease or row.status != LedgerStatus.SENDING:
            raise DeferredFailure(Reason.LEASE_LOST, "lease taken over")
        row.status, row.lease = record.status, None
        row.records.append(record)
        if record.callback is None or record.callback_url is None:
            return None
        self.outbox.append((claim.request_id, str(record.callback)))
        return next(self._ids)

    def reject(
        self,
        request_id: str,
        notification_id: str,
        correlation_id: str,
        reason: Reason,
        detail: str,
        callback_url: str | None,
    ) -> int | None:
        self.rejections.append((request_id, reason))
        if request_id in self.rows or callback_url is None:
            return None
        self.rows[request_id] = _Row("", LedgerStatus.FAILED, None)
        self.outbox.append((request_id, "failed"))
        return next(self._ids)


class FakeTemplates:
    def __init__(self, templates: dict[str, Template | WorkerFailure]) -> None:
        self.templates = templates
        self.calls = 0

    def get(self, code: str, language: str | None) -> Template:
        self.calls += 1
        found = self.templates.get(code)
        if found is None:
            raise PermanentFailure(Reason.TEMPLATE_NOT_FOUND, f"template {code!r} not found")
        if isinstance(found, WorkerFailure):
            raise found
        return found


class FakeRecipients:
    def __init__(self, users: dict[str, Recipient | WorkerFailure] | None = None) -> None:
        self.users = users or {}

    def resolve(self, request: EmailRequest) -> Recipient:
        if request.recipient:
            return Recipient(request.recipient)
        found = self.users.get(request.user_id or "")
        if found is None:
            raise PermanentFailure(Reason.RECIPIENT_UNKNOWN, "user not found")
        if isinstance(found, WorkerFailure):
            raise found
        return found


class FakeMailer:
    """Sends succeed unless a failure is queued in ``script`` (consumed in order)."""

    def __init__(self, *script: WorkerFailure | Exception) -> None:
        self.script = list(script)
        self.sent: list[OutgoingEmail] = []

    def send(self, email: OutgoingEmail) -> Sent:
        if self.script:
            raise self.script.pop(0)
        self.sent.append(email)
        return Sent("250 2.0.0 Ok: queued", "smtp://fake:25")


class FakeNotifier:
    def __init__(self) -> None:
        self.handed_over: list[int] = []

    def hand_over(self, outbox_id: int) -> None:
        self.handed_over.append(outbox_id)


class FakeReportLedger:
    """The ``ReportLedger`` and replay guard of bounce reports (``email_worker.reports``):
    ``sent`` maps our Message-IDs to (request_id, recipient); a report moves a sent request to
    its status once, with callback row ``outbox_id``; claims are a set."""

    def __init__(self, sent: dict[str, tuple[str, str]] | None = None) -> None:
        self.sent = dict(sent or {})
        self.status: dict[str, str] = {}
        self.errors: list[tuple[str, str]] = []  # (request_id, callback error)
        self.claims: set[tuple[str, str]] = set()
        self._outbox = itertools.count(1)

    def tie(self, report: Report, status: str, error: str) -> Tied | None:
        found = next((self.sent[m] for m in report.message_ids if m in self.sent), None)
        if found is None:
            return None
        request_id, recipient = found
        if request_id in self.status:
            return Tied(request_id, recipient, False, None)
        self.status[request_id] = status
        self.errors.append((request_id, error))
        return Tied(request_id, recipient, True, next(self._outbox))

    def claim(self, provider: str, token: str, seconds: float) -> bool:
        if (provider, token) in self.claims:
            return False
        self.claims.add((provider, token))
        return True

    def forget(self, provider: str, token: str) -> None:
        self.claims.discard((provider, token))


class FakeSuppressionList:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, str, str]] = []  # (address, reason, source, detail)

    def add(self, address: str, reason: str, source: str, detail: str = "") -> None:
        self.added.append((address, reason, source, detail))


class FakeRelay:
    """A ``RelayTransport`` (email_worker/relays/router.py) answering from ``script`` (a failure
    to raise, or None: accept), then accepting; it counts its sends."""

    def __init__(self, *script: WorkerFailure | None) -> None:
        self.script = list(script)
        self.sends = 0
        self.closed = False

    def send(self, email: OutgoingEmail) -> str:
        self.sends += 1
        if self.script:
            failure = self.script.pop(0)
            if failure is not None:
                raise failure
        return "250 2.0.0 queued"

    def close(self) -> None:
        self.closed = True
