"""The status-callback dispatcher: delivers ``callback_outbox`` rows to the gateway, at least once.

``deliver_many`` claims a batch of rows in one UPDATE (a short dispatcher lease in
``in_flight_until``), POSTs each signed body with no transaction open, then records the
results fenced by the attempt number (all successes in one UPDATE). Order is kept per
request: a row with a newer row behind it is superseded instead of sent, and a newer row
waits while an older one is on the wire, so the gateway never sees a status move backwards.
Failures are rescheduled in the row itself (exponential backoff with full jitter,
``Retry-After`` on 429) and re-driven by beat through ``due``; a row older than
``max_age_hours``, or answered 410 Gone, is ``dead``. Email sending never waits on any of this.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import cursor

from email_worker import __version__
from email_worker.callback_backoff import backoff, retry_after_seconds
from email_worker.callback_http import CallbackHttp, NoAnswer
from email_worker.db import Database
from email_worker.metrics import count_callback
from email_worker.signing import sign
from schemas.callback import CallbackStatus, StatusCallback
from schemas.deadletter import rfc3339

log = logging.getLogger(__name__)

BLOCKED_DELAY = 5.0  # a newer row waiting for an older one in flight retries this soon
USER_AGENT = f"email-worker/{__version__}"

_CLAIM = """
UPDATE callback_outbox o SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease)s),
    in_flight_until = now() + make_interval(secs => %(lease)s)
WHERE o.id = ANY(%(ids)s) AND o.state = 'pending'
  AND (o.attempts = 0 OR o.next_attempt_at <= now())
  AND NOT EXISTS (SELECT 1 FROM callback_outbox n
                  WHERE n.request_id = o.request_id AND n.id > o.id)
  AND NOT EXISTS (SELECT 1 FROM callback_outbox p
                  WHERE p.request_id = o.request_id AND p.id < o.id
                    AND p.state = 'pending' AND p.in_flight_until > now())
RETURNING o.id, o.attempts, o.webhook_id, o.callback_url, o.request_id, o.notification_id,
          o.correlation_id, o.status, o.error, o.event_at
"""

_EXPLAIN = """
SELECT o.state,
       EXISTS (SELECT 1 FROM callback_outbox n WHERE n.request_id = o.request_id AND n.id > o.id),
       EXISTS (SELECT 1 FROM callback_outbox p WHERE p.request_id = o.request_id AND p.id < o.id
               AND p.state = 'pending' AND p.in_flight_until > now())
FROM callback_outbox o WHERE o.id = %s
"""

# Every result write is fenced by the attempt number this dispatcher claimed: a dispatcher
# whose lease ran out (and whose row was claimed again) writes nothing.
_FENCE = "WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'"

_DEAD = f"""
UPDATE callback_outbox SET state = 'dead', in_flight_until = NULL, last_error = %(error)s
{_FENCE}
"""

# The common outcome of a batch, settled in one statement; a row not returned was re-claimed.
_DELIVERED = """
UPDATE callback_outbox o SET state = 'delivered', in_flight_until = NULL, last_error = NULL,
    delivered_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS d(id, attempt)
WHERE o.id = d.id AND o.attempts = d.attempt AND o.state = 'pending'
RETURNING o.id
"""

_RESCHEDULE = f"""
UPDATE callback_outbox SET in_flight_until = NULL, last_error = %(error)s,
    next_attempt_at = now() + make_interval(secs => %(delay)s),
    state = CASE WHEN created_at < now() - make_interval(secs => %(max_age)s)
                 THEN 'dead' ELSE 'pending' END
{_FENCE}
RETURNING state
"""

# Beat's re-drive marks what it hands over, so a row is not enqueued again on every tick
# while the callback workers are down; it becomes eligible again after one lease.
_DUE = """
UPDATE callback_outbox SET redriven_at = now()
WHERE id IN (SELECT id FROM callback_outbox
             WHERE state = 'pending' AND next_attempt_at <= now()
               AND (redriven_at IS NULL OR redriven_at < now() - make_interval(secs => %s))
             ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""


@dataclass(frozen=True)
class _Job:
    outbox_id: int
    attempt: int
    webhook_id: str
    url: str
    request_id: str
    body: bytes


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
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._http = http
        self._secret = secret
        self._lease = lease_seconds
        self._max_age = max_age_hours * 3600.0
        self._clock = clock
        self._rng = rng or random.Random()

    def deliver(self, outbox_id: int) -> str:
        """Try to deliver one row now; see ``deliver_many``."""
        return self.deliver_many([outbox_id])[outbox_id]

    def deliver_many(self, outbox_ids: list[int]) -> dict[int, str]:
        """Try to deliver these rows now, in id order. Returns each id's outcome:
        ``delivered``, ``retry``, ``dead``, ``superseded``, ``blocked`` (an older row is on the
        wire), ``not_due``, ``skipped`` (already settled), ``missing``, or ``expired`` (the batch
        outlived half its lease before this row's turn; it was not sent and beat re-drives it
        after the lease). Raises only ``DeferredFailure`` (database down)."""
        ids = sorted(set(outbox_ids))
        claimed_at = time.monotonic()
        with self._db.autocommit() as cur:
            cur.execute(_CLAIM, {"ids": ids, "lease": self._lease})
            jobs = sorted((_job(row) for row in cur.fetchall()), key=lambda job: job.outbox_id)
        outcomes = self._explain_unclaimed(set(ids) - {job.outbox_id for job in jobs})
        answers: list[tuple[_Job, _Answer]] = []
        for job in jobs:
            # Past half the lease another dispatcher may claim the rest: leave them to it.
            if time.monotonic() - claimed_at > self._lease / 2:
                outcomes[job.outbox_id] = "expired"
                continue
            answers.append((job, self._post(job)))  # no transaction is open here
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
                cur.execute(_DELIVERED, params)
                outcomes |= {int(row[0]): "delivered" for row in cur.fetchall()}
        for job, answer in answers:
            if job.outbox_id not in outcomes:
                outcomes[job.outbox_id] = self._settle_failure(job, answer)
        return outcomes

    def _log(self, job: _Job, answer: _Answer, outcome: str) -> None:
        log.info(
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
            cur.execute(_DUE, (self._lease, limit))
            return sorted(int(row[0]) for row in cur.fetchall())

    def _post(self, job: _Job) -> _Answer:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": job.webhook_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._secret:
            headers["webhook-signature"] = sign(self._secret, job.webhook_id, timestamp, job.body)
        try:
            answer = self._http.post(job.url, job.body, headers)
        except NoAnswer as exc:
            return _Answer(None, None, str(exc))
        return _Answer(answer.status, answer.retry_after, None)

    def _settle_failure(self, job: _Job, answer: _Answer) -> str:
        code = answer.code
        error = answer.error or f"HTTP {code}"
        if code == 410:
            return self._mark_dead(job, error)
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
            cur.execute(_RESCHEDULE, params)
            row = cur.fetchone()
        if row is None:
            return "skipped"
        return "dead" if row[0] == "dead" else "retry"

    def _mark_dead(self, job: _Job, error: str) -> str:
        with self._db.transaction() as cur:
            cur.execute(_DEAD, {"id": job.outbox_id, "attempt": job.attempt, "error": error})
            return "dead" if cur.rowcount == 1 else "skipped"


def _accepted(answer: _Answer) -> bool:
    return answer.code is not None and 200 <= answer.code < 300


def _job(row: tuple[Any, ...]) -> _Job:
    outbox_id, attempt, webhook_id, url, request_id, notification_id, correlation_id = row[:7]
    status, error, event_at = row[7:]
    body = StatusCallback(
        notification_id=notification_id,
        status=CallbackStatus(status),
        timestamp=rfc3339(event_at),
        error=error,
        request_id=request_id,
        correlation_id=correlation_id,
    )
    body_bytes = body.model_dump_json().encode()
    return _Job(int(outbox_id), attempt, webhook_id, url, request_id, body_bytes)


def _refusal(cur: cursor, outbox_id: int) -> str:
    """Explain (and act on) a claim that returned no row."""
    cur.execute(_EXPLAIN, (outbox_id,))
    row = cur.fetchone()
    if row is None:
        return "missing"
    state, has_newer, older_in_flight = row
    if state != "pending":
        return "skipped"
    if has_newer:
        cur.execute(
            "UPDATE callback_outbox SET state = 'superseded' WHERE id = %s AND state = 'pending'"
            " AND (in_flight_until IS NULL OR in_flight_until <= now())",
            (outbox_id,),
        )
        return "superseded" if cur.rowcount == 1 else "skipped"
    if older_in_flight:
        cur.execute(
            "UPDATE callback_outbox SET next_attempt_at = now() + make_interval(secs => %s)"
            " WHERE id = %s",
            (BLOCKED_DELAY, outbox_id),
        )
        return "blocked"
    return "not_due"
