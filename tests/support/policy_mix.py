"""A mix of requests that exercises every delivery policy at once, for the ledger checker under
faults (tests/integration/test_faults_policy.py).

``PolicyMix.publish(count)`` registers ``count`` requests with a ``LedgerCheck``, spread over
the kinds below, scripts the relay for the ones it must refuse, puts the ``supp`` recipients on
the suppression list, and publishes them at once (send_at and expires_at are relative to the
moment of publishing). Each kind carries the outcome the checker expects:

    plain    an ordinary send                                  delivered
    sched    send_at 4-10 s ahead                              delivered, never before send_at
    soft     451 4.3.0 once at RCPT                            delivered (after one attempt)
    hard     550 5.1.1 at RCPT                                 dead letter recipient_rejected
    supp     the address is on the suppression list            dead letter suppressed
    exph     send_at 60 s ahead, expires_at 4 s ahead          dead letter expired
    expr     expires_at 3-8 s ahead, 451 once                  delivered or expired
    cancel   send_at 30 s ahead, cancelled while held          cancelled (a failed callback)

Throttling and failover are not kinds: they happen to whichever request meets a throttling relay
or a relay that refuses connections; ``breakdown`` counts them from the ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore
from tests.support.ledger_check import LedgerCheck, Report
from tests.support.smtp import Behaviour, SmtpTestServer
from tests.support.stack import wait_for

# Per 20 requests: the shares of the kinds.
SHARES = {
    "plain": 7,
    "sched": 3,
    "soft": 2,
    "hard": 1,
    "supp": 1,
    "exph": 1,
    "expr": 2,
    "cancel": 3,
}
EXPECT = {
    "plain": "delivered",
    "sched": "delivered",
    "soft": "delivered",
    # A redelivery after a kill between the dead letter and its ack runs the pipeline again
    # and meets the suppression its 5.1.1 added: a second record, reason suppressed.
    "hard": "recipient_rejected|suppressed",
    "supp": "suppressed",
    "exph": "expired",
    "expr": "delivered|expired",
    "cancel": "cancelled",
}
SOFT = Behaviour(rcpt="451 4.3.0 try again later")
# Several, so that a retry caused by a fault (a kill before the outcome was recorded) is
# refused again rather than accepted.
HARD = [Behaviour(rcpt="550 5.1.1 no such user")] * 6
VARIABLES = {"name": "Ada", "link": "https://example.com/x"}


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class PolicyMix:
    """Requests of every kind, published through ``check`` to a stack whose relay is
    ``relay`` and whose database is ``database_url``."""

    def __init__(
        self, check: LedgerCheck, relay: SmtpTestServer, database_url: str, label: str
    ) -> None:
        self.check, self.relay, self.database_url, self.label = check, relay, database_url, label
        self.kinds: dict[str, str] = {}  # request key → kind

    def keys(self, kind: str) -> list[str]:
        return [key for key, k in self.kinds.items() if k == kind]

    def publish(self, count: int) -> None:
        """Register ``count`` requests over the kinds (in a fixed interleaving) and publish
        them; the relay's scripts and the suppression list are set first."""
        order = [kind for kind, share in SHARES.items() for _ in range(share)]
        now = datetime.now(UTC)
        suppressed: list[str] = []
        for n in range(count):
            kind = order[(n * 7) % len(order)]  # 7 is prime to 20: every kind, spread out
            key = f"{self.label}-{kind}-{n:03d}"
            recipient = f"{key}@example.com".lower()
            body: dict[str, Any] = {
                "request_id": key,
                "template_code": "welcome",
                "to_email": recipient,
                "variables": VARIABLES,
            }
            not_before = self._timing(kind, n, now, body)
            if kind in ("soft", "expr"):
                self.relay.script(recipient, SOFT)
            elif kind == "hard":
                self.relay.script(recipient, *HARD)
            elif kind == "supp":
                suppressed.append(recipient)
            self.check.add(
                key, body=body, recipient=recipient, expect=EXPECT[kind], not_before=not_before
            )
            self.kinds[key] = kind
        self._suppress(suppressed)
        self.check.publish()

    @staticmethod
    def _timing(kind: str, n: int, now: datetime, body: dict[str, Any]) -> float | None:
        """Set the kind's send_at / expires_at on ``body``; returns the send_at (epoch s)."""
        send_at: datetime | None = None
        if kind == "sched":
            send_at = now + timedelta(seconds=4 + n % 7)
        elif kind == "exph":
            send_at = now + timedelta(seconds=60)
            body["expires_at"] = _rfc3339(now + timedelta(seconds=4))
        elif kind == "expr":
            body["expires_at"] = _rfc3339(now + timedelta(seconds=3 + n % 6))
        elif kind == "cancel":
            send_at = now + timedelta(seconds=30)
        if send_at is None:
            return None
        # The body carries milliseconds: the bound is the instant the worker reads.
        send_at = send_at.replace(microsecond=send_at.microsecond // 1000 * 1000)
        body["send_at"] = _rfc3339(send_at)
        return send_at.timestamp()

    def _suppress(self, addresses: list[str]) -> None:
        db = Database(self.database_url, pool_size=1)
        try:
            store = SuppressionStore(db)
            for address in addresses:
                store.add(address, "manual", "cli", "policy fault test")
        finally:
            db.close()

    def cancel_held(
        self, environment: Mapping[str, str], status: Callable[[str], str | None], timeout: float
    ) -> None:
        """Once every ``cancel`` request is held, cancel them all with ``email-worker cancel``
        (a process, as an operator would), again until it answers 0 (the database may be
        restarting); AssertionError at the deadline."""
        keys = self.keys("cancel")
        deadline = time.monotonic() + timeout
        held = lambda: all(status(key) == "scheduled" for key in keys)  # noqa: E731
        wait_for(held, timeout, "every cancel request to be held")
        while True:
            done = subprocess.run(
                [sys.executable, "-m", "email_worker", "cancel", *keys],
                env={**os.environ, **environment},
                capture_output=True,
                timeout=60,
                check=False,
            )
            if done.returncode == 0:
                return
            assert time.monotonic() < deadline, f"cancel kept failing: {done.stdout[-500:]!r}"
            time.sleep(0.5)


def breakdown(mix: PolicyMix, report: Report, database_url: str, backup_relay: str) -> str:
    """One line for the report: the checker's counts, then kind/outcome pairs, and how many
    deliveries were throttled first, went to ``backup_relay`` (a failover), or were held and
    released."""
    pairs = Counter(f"{mix.kinds[v.key]}/{v.outcome}" for v in report.verdicts)
    db = Database(database_url, pool_size=1)
    try:
        with db.transaction() as cur:
            cur.execute(
                "SELECT"
                " count(*) FILTER (WHERE EXISTS (SELECT 1 FROM email_events e WHERE"
                "  e.request_id = r.request_id AND e.reason = 'throttled')),"
                " count(*) FILTER (WHERE r.relay = %s),"
                " count(*) FILTER (WHERE EXISTS (SELECT 1 FROM email_events e WHERE"
                "  e.request_id = r.request_id AND e.event = 'released')),"
                " count(*) FILTER (WHERE EXISTS (SELECT 1 FROM email_events e WHERE"
                "  e.request_id = r.request_id AND e.event IN ('taken_over', 'unknown')))"
                " FROM email_requests r WHERE r.status = 'sent' AND r.request_id = ANY(%s)",
                (backup_relay, list(mix.kinds)),
            )
            row = cur.fetchone()
    finally:
        db.close()
    throttled, failed_over, released, ambiguous = row if row else (0, 0, 0, 0)
    return (
        f"{dict(report.counts)} by kind {dict(sorted(pairs.items()))}; delivered after a"
        f" throttle {throttled}, through the backup relay {failed_over}, held and released"
        f" {released}, after a takeover or an unknown outcome {ambiguous}"
    )


def explain(report: Report, database_url: str) -> str:
    """The ledger's events of every request the checker did not pass, for failure messages."""
    bad = [v.key for v in report.verdicts if v.outcome in ("lost", "unexpected")]
    db = Database(database_url, pool_size=1)
    try:
        with db.transaction() as cur:
            cur.execute(
                "SELECT request_id, string_agg(event || coalesce(':' || reason, '')"
                " || ' @' || to_char(at, 'HH24:MI:SS.MS'), ', ' ORDER BY id)"
                " FROM email_events WHERE request_id = ANY(%s) GROUP BY 1",
                (bad,),
            )
            return "\n".join(f"{key}: {trail}" for key, trail in cur.fetchall())
    finally:
        db.close()
