"""Cancelling a request before it is sent (CONTRACT section 14), for ``email-worker cancel``
and the status API's ``POST /api/v1/notifications/{request_id}/cancel``.

One call of ``ew_cancel`` (migration ``006_schedules_and_cancel``) decides under the row's lock
and writes, in one transaction, the ``failed`` status with reason ``cancelled``, its event and
its ``failed`` callback (``cancelled: <detail>``); the held copy of a scheduled send is dropped
with it. A claim never takes a cancelled request again, so its message (still queued, in a
delay queue, or published again later) is acked as ``cancelled`` and never sent. The row lock
orders a cancel and a claim: whichever commits first wins, and the other sees it (a claim that
won makes the cancel answer "in flight").

A request the worker has not seen is refused as unknown, unless the caller says it may still
be waiting in the queue (``unseen``): then the cancel is recorded ahead of it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import HANDOVER_GRACE_SECONDS

Outcome = Literal["cancelled", "already_cancelled", "unknown", "refused"]

CANCEL = """
SELECT outcome, previous, reason, outbox_id
FROM ew_cancel(%(request_id)s, %(detail)s, %(url)s, %(webhook_id)s, %(grace)s, %(unseen)s)
"""

_CANCELLED_FROM = {
    None: "not seen yet: its message is acked as cancelled when it arrives",
    "scheduled": "it was scheduled: its held copy is dropped",
    "pending": "it was waiting for a retry: the copy is acked as cancelled when it comes back",
}
_REFUSED = {
    "sent": "already sent: there is nothing to cancel",
    "bounced": "already sent (and bounced): there is nothing to cancel",
    "complained": "already sent (and complained about): there is nothing to cancel",
    "sending": "being sent right now (in flight): it can no longer be cancelled",
    "unknown": "may already be delivered (the connection was lost after the relay took the "
    "message): it can no longer be cancelled",
}
UNKNOWN = (
    "no request with this request_id: the worker has not seen it. If its message may still be "
    "waiting in the queue, cancel it ahead of its arrival with --unseen (CLI) or ?unseen=true "
    "(status API)"
)


@dataclass(frozen=True)
class CancelResult:
    """What one cancel did. ``previous`` is the ledger status it found (None when it found no
    row), ``reason`` that status's failure reason, ``outbox_id`` the callback row to hand
    over."""

    request_id: str
    outcome: Outcome
    previous: str | None = None
    reason: str | None = None
    outbox_id: int | None = None

    @property
    def done(self) -> bool:
        """True when the request is cancelled now (by this call or an earlier one)."""
        return self.outcome in ("cancelled", "already_cancelled")

    @property
    def explanation(self) -> str:
        """One sentence for the operator or the API caller (no address, no content)."""
        if self.outcome == "cancelled":
            return f"cancelled: {_CANCELLED_FROM.get(self.previous, 'it was not sent')}"
        if self.outcome == "already_cancelled":
            return "already cancelled: nothing changed"
        if self.outcome == "unknown":
            return UNKNOWN
        if self.previous == "failed":
            return f"already failed ({self.reason or 'no reason recorded'}): nothing to cancel"
        return _REFUSED.get(str(self.previous), f"cannot be cancelled (status {self.previous})")


def cancel_request(
    db: Database, request_id: str, *, detail: str, callback_url: str | None, unseen: bool = False
) -> CancelResult:
    """Cancel ``request_id`` unless it was sent or is being sent. ``detail`` follows
    ``cancelled: `` in the callback's error; ``callback_url`` is where the callback goes when
    the request has had none yet (``CALLBACK_URL``; None: no callback). Raises
    ``DeferredFailure`` when the database is unavailable."""
    params = {
        "request_id": request_id,
        "detail": detail,
        "url": callback_url,
        # Stable per status event, drawn once: the dispatcher signs every try with it.
        "webhook_id": f"msg_{secrets.token_hex(16)}",
        "grace": HANDOVER_GRACE_SECONDS,
        "unseen": unseen,
    }
    with db.transaction() as cur:
        cur.execute(CANCEL, params)
        row = cur.fetchone()
    if row is None:  # pragma: no cover - ew_cancel always returns one row
        raise LookupError("ew_cancel returned nothing")
    outcome, previous, reason, outbox_id = row
    return CancelResult(
        request_id, outcome, previous, reason, None if outbox_id is None else int(outbox_id)
    )
