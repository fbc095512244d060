"""The suppression list read by the claim itself (``PgLedger(check_suppressions=True)``), on a
real Postgres: each claimed request carries the list's answer for its own address, as
``SuppressionStore`` would give it (normalised, an expired entry absent), in a lone claim and
in a shared batch; a request without an address, or with one the list cannot hold, carries
none, so the pipeline asks the list itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ledger.suppressions import SuppressionStore
from email_worker.ports import AlreadySent, Claim, SuppressionCheck
from schemas.request import EmailRequest
from tests.fakes import email_request

pytestmark = pytest.mark.integration


def to(address: str | None, request_id: str) -> EmailRequest:
    return email_request(request_id).model_copy(update={"recipient": address})


def claimed(result: Claim | AlreadySent | BaseException) -> Claim:
    assert isinstance(result, Claim), result
    return result


def test_a_batch_of_claims_carries_each_addresss_suppression(db: Database) -> None:
    store = SuppressionStore(db)
    store.add("bounced@example.com", "hard_bounce", "smtp")
    store.add("Gone@Example.com", "complaint", "ses")
    past = datetime.now(UTC) - timedelta(minutes=1)
    store.add("expired@example.com", "manual", "cli", expires_at=past)
    book = PgLedger(db, lease_seconds=30, check_suppressions=True)
    requests = [
        to("bounced@example.com", "s-1"),
        to("GONE@example.com", "s-2"),  # the list's own normalisation: same address
        to("expired@example.com", "s-3"),
        to("fine@example.com", "s-4"),
        to(None, "s-5"),  # no address: the user service will give one
        to("not an address", "s-6"),  # the list refuses it: its own check must say so
    ]

    results = [claimed(r) for r in book.claim_many(requests)]

    assert [r.suppression for r in results] == [
        SuppressionCheck("bounced@example.com", "hard_bounce"),
        SuppressionCheck("GONE@example.com", "complaint"),
        SuppressionCheck("expired@example.com", None),
        SuppressionCheck("fine@example.com", None),
        None,
        None,
    ]


def test_a_lone_claim_reads_the_list_as_it_is_at_that_moment(db: Database) -> None:
    store = SuppressionStore(db)
    book = PgLedger(db, lease_seconds=30, check_suppressions=True)
    first = claimed(book.claim(to("later@example.com", "l-1")))
    store.add("later@example.com", "unsubscribe", "unsubscribe")
    second = claimed(book.claim(to("later@example.com", "l-2")))
    assert first.suppression == SuppressionCheck("later@example.com", None)
    assert second.suppression == SuppressionCheck("later@example.com", "unsubscribe")


def test_without_the_check_the_claim_carries_no_answer(db: Database) -> None:
    SuppressionStore(db).add("bounced@example.com", "hard_bounce", "smtp")
    book = PgLedger(db, lease_seconds=30)
    assert claimed(book.claim(to("bounced@example.com", "n-1"))).suppression is None
