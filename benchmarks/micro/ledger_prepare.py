"""The ledger's statements with server-side prepared statements
(``email_worker.ledger.prepared``) on and off: ``PgLedger.claim_many`` then ``finish_many`` (a
``sent`` outcome with its rendered bodies and a callback outbox row) for fresh requests, against
the real Postgres.

Each run makes a scratch database of its own (``bench_micro_<hex>``), migrated by
``email_worker.ledger.migrations.migrate``, and drops it at the end. Each side has its own pooled
connection (one), whose backend's CPU (read from ``/proc/<pid>/stat``, 10 ms ticks) is added to
this process's: preparing saves work on the server, so the client's CPU alone would hide it.
One operation is one request claimed and finished; batches of 1 (a lone message) and of 16
(group commit under load) share the two statements. Equivalence: both sides end with every
request ``sent`` and one outbox row each; the prepared side's session holds the two prepared
statements and the other none.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks import database, procstat
from benchmarks.micro import samples
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.ledger.db import Database
from email_worker.ledger.migrations import migrate
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import Claim, LedgerStatus, Record
from email_worker.render.textify import html_to_text
from schemas.callback import CallbackStatus
from schemas.request import EmailRequest

PART = "prepared"
LOOPBACK = "postgresql://postgres@127.0.0.1:5432/postgres"
CALLBACK_URL = "https://gateway.example.com/api/v1/email/status/"
NOTES = (
    "both statements are now one `SELECT ... FROM` a plpgsql function (migrations 002, 003), "
    "and plpgsql already plans each statement inside a function once per session: what is "
    "left to prepare is the trivial outer SELECT",
)
_HTML = samples.welcome_html()
_SENT = Record(
    status=LedgerStatus.SENT,
    callback=CallbackStatus.DELIVERED,
    recipient="ada.lovelace@example.org",
    message_id="<3c1e9b2a7f6d4e58a0b1c2d3e4f50617@mail.example.com>",
    smtp_reply="250 2.0.0 Ok: queued as 4XyZ1234",
    email=samples.outgoing(_HTML, html_to_text(_HTML)).content,
    callback_url=CALLBACK_URL,
)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh database, migrated by the worker's own ``migrate``, dropped afterwards."""
    name = f"bench_micro_{uuid.uuid4().hex[:12]}"
    url = database.create(admin_url, name)
    try:
        db = Database(url, pool_size=1)
        try:
            migrate(db)
        finally:
            db.close()
        yield url
    finally:
        database.drop(admin_url, name)


class _Book:
    """One side: a ledger on its own single connection, and fresh requests for it."""

    def __init__(self, url: str, *, prepared: bool, batch: int) -> None:
        self.db = Database(url, pool_size=1)
        self.ledger = PgLedger(self.db, lease_seconds=30, prepared=prepared)
        self.prefix = f"{'p' if prepared else 'u'}{batch}-"
        self._batch = batch
        self._numbers = itertools.count()
        self.backend = int(str(self._scalar("SELECT pg_backend_pid()")))

    def _scalar(self, query: str) -> object:
        with self.db.autocommit() as cur:
            cur.execute(query)
            row = cur.fetchone()
        return row[0] if row else None

    def backend_cpu(self) -> float:
        found = procstat.sample(self.backend)
        return found.cpu_seconds if found else 0.0

    def prepared_names(self) -> set[str]:
        with self.db.autocommit() as cur:
            cur.execute("SELECT name FROM pg_prepared_statements")
            return {str(row[0]) for row in cur.fetchall()}

    def step(self) -> None:
        """Claim and finish ``batch`` fresh requests in one statement each."""
        requests = [_request(f"{self.prefix}{next(self._numbers)}") for _ in range(self._batch)]
        claims = self.ledger.claim_many(requests)
        assert all(isinstance(claim, Claim) for claim in claims), f"claims: {claims}"
        outcomes = [(c, r, _SENT) for c, r in zip(claims, requests, strict=True)]
        written = self.ledger.finish_many(outcomes)  # type: ignore[arg-type]  # all Claims
        assert all(isinstance(outbox_id, int) for outbox_id in written), f"finish: {written}"


def _request(request_id: str) -> EmailRequest:
    return EmailRequest(
        request_id=request_id,
        notification_id=f"n-{request_id}",
        correlation_id=f"c-{request_id}",
        template_code="welcome",
        recipient="ada.lovelace@example.org",
        payload_hash="6f1ed002ab5595859014ebf0951522d9",
        batch_id="batch-7",
        variables={"name": "Ada", "link": "https://example.com/confirm?token=3f9a1c2e7b"},
    )


def _check(books: tuple[_Book, _Book], url: str) -> str:
    assert books[0].prepared_names() >= {"ew_claim_batch", "ew_finish_batch"}, "not prepared"
    assert not books[1].prepared_names(), "the plain side prepared statements"
    db = Database(url, pool_size=1)
    try:
        counts = []
        for book in books:
            with db.autocommit() as cur:
                cur.execute(
                    "SELECT count(*) FILTER (WHERE status = 'sent'), count(*),"
                    " (SELECT count(*) FROM callback_outbox WHERE request_id LIKE %(p)s)"
                    " FROM email_requests WHERE request_id LIKE %(p)s",
                    {"p": book.prefix + "%"},
                )
                sent, rows, outbox = cur.fetchone() or (0, 0, 0)
            assert sent == rows == outbox > 0, f"{book.prefix}: {sent} sent, {rows}, {outbox}"
            counts.append(rows)
    finally:
        db.close()
    return f"every request sent with one outbox row on both sides ({counts[0]} and {counts[1]})"


def run(rounds: int, scale: float = 1.0, admin_url: str = LOOPBACK) -> list[Comparison]:
    """Prepared against plain statements, batches of 1 and 16; ``scale`` multiplies the
    300 (batch 1) and 40 (batch 16) calls per round."""
    found = []
    with scratch_database(admin_url) as url:
        for batch, calls in ((1, 300), (16, 40)):
            books = (
                _Book(url, prepared=True, batch=batch),
                _Book(url, prepared=False, batch=batch),
            )
            try:
                mine, theirs = measure_pair(
                    Side("prepared", books[0].step, batch, books[0].backend_cpu),
                    Side("plain statements", books[1].step, batch, books[1].backend_cpu),
                    calls=max(1, int(calls * scale)),
                    rounds=rounds,
                )
                equivalent = _check(books, url)
            finally:
                for book in books:
                    book.db.close()
            case = f"claim + finish, batch of {batch}"
            found.append(Comparison(PART, case, mine, theirs, equivalent, NOTES))
    return found
