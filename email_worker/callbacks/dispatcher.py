"""The status-callback dispatcher: delivers ``callback_outbox`` rows to the gateway, at least once.

``deliver_many`` claims a batch of rows in one UPDATE (a short dispatcher lease in
``in_flight_until``), POSTs each signed body with no transaction open, then records the
results fenced by the attempt number (all successes in one UPDATE). Order is kept per
request: a row with a newer row behind it is superseded instead of sent, and a newer row
waits while an older one is on the wire, so the gateway never sees a status move backwards.
Failures are rescheduled in the row itself (exponential backoff with full jitter,
``Retry-After`` on 429) and re-driven by beat through ``due``; a row older than
``max_age_hours`` is ``dead``. A 4xx answer other than 408, 425 and 429 (410 Gone included) is
final after that one try: the row is ``rejected`` and logged with the HTTP status. The URL and
body are shaped (``callback_shape.py``) and signed when a row is sent, from what the row
recorded of its status event. Email sending never waits on any of this.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from email_worker import __version__
from email_worker.callbacks import outbox as callback_sql
from email_worker.callbacks.backoff import backoff, is_final, retry_after_seconds
from email_worker.callbacks.sender import CallbackHttp, NoAnswer
from email_worker.callbacks.shape import CallbackEvent, CallbackShape, fill_url
from email_worker.callbacks.signing import sign_with_key, signing_key
from email_worker.callbacks.trace_context import TRACEPARENT_HEADER, CallbackTracing, PassThrough
from email_worker.ledger.db import Cursor, Database
from email_worker.ops.metrics import count_callback
from schemas.callback import CallbackStatus
from schemas.deadletter import rfc3339

log = logging.getLogger(__name__)

BLOCKED_DELAY = 5.0  # a newer row waiting for an older one in flight retries this soon
USER_AGENT = f"email-worker/{__version__}"


@dataclass(frozen=True)
class _Job:
    outbox_id: int
    attempt: int
    webhook_id: str
    url: str
    request_id: str
    body: bytes
    status: str = ""  # the callback's status: delivered, pending, failed
    traceparent: str | None = None  # of the message's span (CONTRACT 18), when it was traced


@dataclass(frozen=True)
class _Answer:
    code: int | None  # None: no HTTP answer (timeout, refused, reset)
    retry_after: str | None
    error: str | None


class CallbackDispatcher:
    """Delivers outbox rows. Thread-safe; one instance per process is enough."""

    def __init__(
        self,
        db: Database,
        http: CallbackHttp,
        *,
        secret: str | None,
        lease_seconds: float,
        max_age_hours: float,
        shape: CallbackShape | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tracing: CallbackTracing | None = None,
    ) -> None:
        """``secret``: ``whsec_<base64>`` (``signing.signing_key`` raises ``SignatureError``
        for anything else) or None to send unsigned callbacks. ``tracing``: the span around
        each POST (default: none, the row's ``traceparent`` forwarded as it is)."""
        self._tracing: CallbackTracing = tracing or PassThrough()
        self._db = db
        self._http = http
        self._key = signing_key(secret) if secret else None
        self._shape = shape or CallbackShape()
        self._lease = lease_seconds
        self._max_age = max_age_hours * 3600.0
        self._clock = clock
        self._rng = rng or random.Random()

    def deliver(self, outbox_id: int) -> str:
        """Try to deliver one row now; see ``deliver_many``."""
        return self.deliver_many([outbox_id])[outbox_id]

    def deliver_many(self, outbox_ids: list[int]) -> dict[int, str]:
        """Try to deliver these rows now, in id order. Returns each id's outcome:
        ``delivered``, ``retry``, ``rejected`` (a final 4xx), ``dead``, ``superseded``,
        ``blocked`` (an older row is on the wire), ``not_due``, ``skipped`` (already settled),
        ``missing``, or ``expired`` (the batch outlived half its lease before this row's turn;
        it was not sent and beat re-drives it after the lease). Raises only
        ``DeferredFailure`` (database down)."""
        ids = sorted(set(outbox_ids))
        claimed_at = time.monotonic()
        with self._db.autocommit() as cur:
            cur.execute(callback_sql.CLAIM, {"ids": ids, "lease": self._lease})
            rows = cur.fetchall()
        jobs = sorted((self._job(row) for row in rows), key=lambda job: job.outbox_id)
        outcomes = self._explain_unclaimed(set(ids) - {job.outbox_id for job in jobs})
        answers: list[tuple[_Job, _Answer]] = []
        for job in jobs:
            # Past half the lease another dispatcher may claim the rest: leave them to it.
            if time.monotonic() - claimed_at > self._lease / 2:
                outcomes[job.outbox_id] = "expired"
                continue
            answers.append((job, self._traced_post(job)))  # no transaction is open here
        outcomes |= self._settle_all(answers)
        for job, answer in answers:
            self._log(job, answer, outcomes[job.outbox_id])
        for outcome in outcomes.values():
            count_callback(outcome)
        return outcomes

    def _explain_unclaimed(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self._db.transaction() as cur:
            return {outbox_id: _refusal(cur, outbox_id) for outbox_id in sorted(ids)}

    def _settle_all(self, answers: list[tuple[_Job, _Answer]]) -> dict[int, str]:
        ok = [job for job, answer in answers if _accepted(answer)]
        outcomes = {job.outbox_id: "skipped" for job in ok}
        if ok:
            params = {"ids": [j.outbox_id for j in ok], "attempts": [j.attempt for j in ok]}
            with self._db.autocommit() as cur:
                cur.execute(callback_sql.DELIVERED, params)
                outcomes |= {int(row[0]): "delivered" for row in cur.fetchall()}
        for job, answer in answers:
            if job.outbox_id not in outcomes:
                outcomes[job.outbox_id] = self._settle_failure(job, answer)
        return outcomes

    def _log(self, job: _Job, answer: _Answer, outcome: str) -> None:
        # A refusal for good is the operator's to fix (URL, field names, secret): a warning.
        log.log(
            logging.WARNING if outcome == "rejected" else logging.INFO,
            "callback %s",
            outcome,
            extra={
                "outbox_id": job.outbox_id,
                "request_id": job.request_id,
                "attempt": job.attempt,
                "http_status": answer.code,
                "outcome": outcome,
            },
        )

    def due(self, limit: int) -> list[int]:
        """Ids of pending rows whose next attempt is due and that were not re-driven within
        the last lease, oldest first; marks them re-driven (at most ``limit``)."""
        with self._db.transaction() as cur:
            cur.execute(callback_sql.DUE, (self._lease, limit))
            return sorted(int(row[0]) for row in cur.fetchall())

    def _traced_post(self, job: _Job) -> _Answer:
        """The POST inside its span (CONTRACT 18), carrying the trace's ``traceparent``."""
        attributes: dict[str, str | int] = {"request_id": job.request_id, "attempt": job.attempt}
        attributes |= {"outbox_id": job.outbox_id, "callback_status": job.status}
        with self._tracing.post(job.traceparent, attributes) as call:
            answer = self._post(job, call.traceparent)
            call.answered(answer.code, "delivered" if _accepted(answer) else "not_delivered")
        return answer

    def _post(self, job: _Job, traceparent: str | None = None) -> _Answer:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": job.webhook_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:  # over the exact bytes sent
            signature = sign_with_key(self._key, job.webhook_id, timestamp, job.body)
            headers["webhook-signature"] = signature
        if traceparent is not None:
            headers[TRACEPARENT_HEADER] = traceparent
        try:
            answer = self._http.post(job.url, job.body, headers)
        except NoAnswer as exc:
            return _Answer(None, None, str(exc))
        return _Answer(answer.status, answer.retry_after, None)

    def _settle_failure(self, job: _Job, answer: _Answer) -> str:
        code = answer.code
        error = answer.error or f"HTTP {code}"
        if is_final(code):
            return self._mark_final(job, error, "rejected")
        delay = None
        if code == 429:
            delay = retry_after_seconds(answer.retry_after, self._clock())
        if delay is None:
            delay = backoff(job.attempt, self._rng)
        params = {
            "id": job.outbox_id,
            "attempt": job.attempt,
            "error": error,
            "delay": delay,
            "max_age": self._max_age,
        }
        with self._db.transaction() as cur:
            cur.execute(callback_sql.RESCHEDULE, params)
            row = cur.fetchone()
        if row is None:
            return "skipped"
        return "dead" if row[0] == "dead" else "retry"

    def _mark_final(self, job: _Job, error: str, state: str) -> str:
        params = {"id": job.outbox_id, "attempt": job.attempt, "error": error, "state": state}
        with self._db.transaction() as cur:
            cur.execute(callback_sql.FINAL, params)
            return state if cur.rowcount == 1 else "skipped"

    def _job(self, row: tuple[Any, ...]) -> _Job:
        outbox_id, attempt, webhook_id, url, request_id, notification_id, correlation_id = row[:7]
        status, error, event_at, request_attempts, traceparent = row[7:]
        event = CallbackEvent(
            notification_id=notification_id,
            request_id=request_id,
            correlation_id=correlation_id,
            status=CallbackStatus(status),
            timestamp=rfc3339(event_at),
            error=error,
            attempts=request_attempts,
        )
        body = self._shape.body(event)
        url = fill_url(url, event)
        return _Job(int(outbox_id), attempt, webhook_id, url, request_id, body, status, traceparent)


def _accepted(answer: _Answer) -> bool:
    return answer.code is not None and 200 <= answer.code < 300


def _refusal(cur: Cursor, outbox_id: int) -> str:
    """Explain (and act on) a claim that returned no row."""
    cur.execute(callback_sql.EXPLAIN, (outbox_id,))
    row = cur.fetchone()
    if row is None:
        return "missing"
    state, has_newer, older_in_flight = row
    if state != "pending":
        return "skipped"
    if has_newer:
        cur.execute(callback_sql.SUPERSEDE, (outbox_id,))
        return "superseded" if cur.rowcount == 1 else "skipped"
    if older_in_flight:
        cur.execute(callback_sql.BLOCKED, (BLOCKED_DELAY, outbox_id))
        return "blocked"
    return "not_due"
