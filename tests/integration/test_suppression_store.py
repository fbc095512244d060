"""The suppression list on a real Postgres: add/upsert with the order of reasons, expiry,
remove, list (masked), normalised lookups, the port's hard bounces and a missing migration."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.migrations import SchemaBehind
from email_worker.ledger.suppressions import (
    PgSuppressions,
    SuppressionStore,
    add_many,
    entry_row,
    smtp_detail,
)
from email_worker.suppression.entries import SuppressionReason

pytestmark = pytest.mark.integration

ADA = "Ada.Lovelace@Example.COM"


@pytest.fixture
def store(db: Database) -> SuppressionStore:
    return SuppressionStore(db)


def test_an_added_address_is_found_in_any_case_and_a_removed_one_is_not(
    store: SuppressionStore,
) -> None:
    assert store.check(ADA) is None
    store.add(ADA, "manual", "cli", "asked by support")
    entry = store.check("ada.lovelace@example.com")
    assert entry is not None
    assert (entry.address, entry.reason, entry.source, entry.detail) == (
        "ada.lovelace@example.com",
        SuppressionReason.MANUAL,
        "cli",
        "asked by support",
    )
    assert entry.expires_at is None and entry.first_seen == entry.last_seen
    assert store.reason(" ADA.LOVELACE@example.com ") is SuppressionReason.MANUAL
    assert store.remove("ada.lovelace@EXAMPLE.com") is True
    assert store.check(ADA) is None
    assert store.remove(ADA) is False


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ("unsubscribe", "hard_bounce", "hard_bounce"),
        ("hard_bounce", "unsubscribe", "hard_bounce"),
        ("complaint", "hard_bounce", "complaint"),
        ("hard_bounce", "complaint", "complaint"),
        ("manual", "unsubscribe", "manual"),
        ("unsubscribe", "manual", "manual"),
    ],
)
def test_a_stronger_reason_is_kept_and_last_seen_moves(
    store: SuppressionStore, first: str, second: str, kept: str
) -> None:
    store.add(ADA, first, "ses", "first")
    before = store.check(ADA)
    store.add(ADA, second, "mailgun", "second")
    after = store.check(ADA)
    assert before is not None and after is not None
    assert after.reason == kept
    assert after.first_seen == before.first_seen
    assert after.last_seen > before.last_seen
    # The source and detail travel with the reason that won.
    assert (after.source, after.detail) == (
        ("mailgun", "second") if kept == second else ("ses", "first")
    )


def test_expired_entries_count_as_absent_and_are_replaced_when_added_again(
    store: SuppressionStore,
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    store.add(ADA, "complaint", "ses", expires_at=past)
    assert store.check(ADA) is None and store.reason(ADA) is None
    assert store.list() == [] and store.count() == 0
    store.add(ADA, "unsubscribe", "unsubscribe")  # weaker, but the complaint has expired
    entry = store.check(ADA)
    assert entry is not None and entry.reason == SuppressionReason.UNSUBSCRIBE
    assert entry.expires_at is None
    store.add("bob@example.com", "manual", "cli", expires_at=past)
    assert store.prune_expired() == 1


def test_beats_prune_deletes_expired_entries_and_keeps_live_ones(
    store: SuppressionStore, db: Database, database_url: str
) -> None:
    from pydantic import SecretStr

    from email_worker.app.build import callback_runtime
    from email_worker.callbacks import tasks
    from email_worker.config import Settings

    store.add(ADA, "manual", "cli", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    store.add("bob@example.com", "complaint", "ses")
    store.add("cy@example.com", "manual", "cli", expires_at=datetime.now(UTC) + timedelta(days=1))
    app = tasks.make_celery("memory://", "q")
    tasks.configure(
        Settings(database_url=SecretStr(database_url), db_pool_size=1), callback_runtime
    )
    try:
        assert app.tasks[tasks.PRUNE]() == 1  # run in this process, as a worker would
    finally:
        tasks.configure(Settings(), callback_runtime)  # closes the runtime built for this test
    with db.transaction() as cur:
        cur.execute("SELECT address FROM suppressions ORDER BY address")
        assert cur.fetchall() == [("bob@example.com",), ("cy@example.com",)]


def test_the_same_reason_keeps_the_later_expiry_and_never_beats_never(
    store: SuppressionStore,
) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    later = soon + timedelta(days=30)
    store.add(ADA, "manual", "cli", expires_at=later)
    store.add(ADA, "manual", "cli", expires_at=soon)
    entry = store.check(ADA)
    assert entry is not None and entry.expires_at == later
    store.add(ADA, "manual", "cli")  # no expiry: for good
    entry = store.check(ADA)
    assert entry is not None and entry.expires_at is None


def test_list_masks_addresses_unless_asked_and_pages_newest_first(
    store: SuppressionStore,
) -> None:
    for name in ("ann", "bob", "cy"):
        store.add(f"{name}@example.com", "hard_bounce", "smtp", "550 5.1.1")
    masked = store.list(limit=2)
    assert [e.address for e in masked] == ["c***@example.com", "b***@example.com"]
    assert [e.address for e in store.list(limit=2, offset=2, masked=False)] == ["ann@example.com"]
    assert store.count() == 3


def test_an_idna_domain_matches_its_unicode_form(store: SuppressionStore) -> None:
    store.add("Otto@xn--bcher-kva.de", "hard_bounce", "dsn")
    assert store.reason("otto@BÜCHER.de") is SuppressionReason.HARD_BOUNCE


@pytest.mark.parametrize(
    ("address", "reason", "source"),
    [
        ("no-at-sign", "manual", "cli"),
        ("a@b@c", "manual", "cli"),
        ("a b@example.com", "manual", "cli"),
        ("a@example.com", "spam", "cli"),
        ("a@example.com", "manual", "CLI; DROP"),
    ],
)
def test_bad_input_is_refused_before_the_database(
    store: SuppressionStore, address: str, reason: str, source: str
) -> None:
    with pytest.raises(ValueError):
        store.add(address, reason, source)
    assert store.count() == 0


def test_concurrent_adds_of_one_address_make_one_entry_with_the_strongest_reason(
    store: SuppressionStore,
) -> None:
    reasons = ["unsubscribe", "manual", "hard_bounce", "complaint"] * 5
    threads = [threading.Thread(target=store.add, args=(ADA, reason, "ses")) for reason in reasons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    entry = store.check(ADA)
    assert store.count() == 1 and entry is not None
    assert entry.reason == SuppressionReason.COMPLAINT


def test_the_port_adds_hard_bounces_with_only_the_reply_code(store: SuppressionStore) -> None:
    PgSuppressions(store, hard_bounces=False).hard_bounce(ADA, "550 5.1.1 <x@y>: unknown")
    assert store.check(ADA) is None
    port = PgSuppressions(store)
    port.hard_bounce(ADA, "550 5.1.1 <ada.lovelace@example.com>: no such user")
    entry = store.check(ADA)
    assert entry is not None
    assert (entry.reason, entry.source, entry.detail) == ("hard_bounce", "smtp", "550 5.1.1")
    assert port.check(ADA.upper()) == "hard_bounce"
    assert port.check("someone@example.com") is None


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        ("550 5.1.1 <a@b.c>: Recipient address rejected", "550 5.1.1"),
        ("550-5.1.1 The email account does not exist", "550-5.1.1"),
        ("550 user unknown a@b.c", "550"),
        ("a@b.c", ""),
    ],
)
def test_smtp_detail_keeps_the_codes_and_drops_the_text(reply: str, detail: str) -> None:
    assert smtp_detail(reply) == detail


def test_a_database_without_the_migration_says_so(database_url: str) -> None:
    bare = Database(database_url, pool_size=1)
    try:
        with pytest.raises(SchemaBehind, match="email-worker migrate"):
            SuppressionStore(bare).check(ADA)
        # The port's best-effort write swallows it (the next refusal tries again).
        PgSuppressions(SuppressionStore(bare)).hard_bounce(ADA, "550 5.1.1")
    finally:
        bare.close()


def test_concurrent_port_checks_each_get_their_own_answer(store: SuppressionStore) -> None:
    listed = {f"user{n}@example.com": ("hard_bounce" if n % 3 else "complaint") for n in range(30)}
    for address, reason in listed.items():
        store.add(address, reason, "ses")
    port = PgSuppressions(store)
    asked = [f"User{n}@Example.com" for n in range(60)]  # half listed, half not
    answers: dict[str, str | None] = {}
    barrier = threading.Barrier(len(asked))

    def ask(address: str) -> None:
        barrier.wait(30)
        answers[address] = port.check(address)

    threads = [threading.Thread(target=ask, args=(address,)) for address in asked]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {address: listed.get(address.lower()) for address in asked}
    assert store.reasons([]) == []


SERIES = [
    ("hard_bounce", "d1"),
    ("unsubscribe", "d2"),
    ("complaint", "d3"),
    ("hard_bounce", "d4"),
    ("complaint", "d5"),
    ("unsubscribe", "d6"),
]


@pytest.mark.parametrize("prior", [None, "unsubscribe", "manual", "complaint", "expired"])
@pytest.mark.parametrize("length", [1, 2, 4, len(SERIES)])
def test_many_adds_in_one_statement_end_as_the_same_adds_one_by_one(
    db: Database, store: SuppressionStore, prior: str | None, length: int
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    for address in ("one@example.org", "many@example.org"):
        if prior == "expired":
            store.add(address, "complaint", "cli", "old", datetime.now(UTC) - timedelta(days=1))
        elif prior is not None:
            store.add(address, prior, "cli", "old", later)
    for reason, detail in SERIES[:length]:
        store.add("one@example.org", reason, "sendgrid", detail)
    with db.transaction() as cur:
        add_many(cur, [entry_row("many@example.org", r, "sendgrid", d) for r, d in SERIES[:length]])
    one, many = store.check("one@example.org"), store.check("many@example.org")
    assert one is not None and many is not None
    fields = ("reason", "source", "detail", "expires_at")
    assert [getattr(many, name) for name in fields] == [getattr(one, name) for name in fields]
