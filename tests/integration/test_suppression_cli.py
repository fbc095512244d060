"""``email-worker suppression list|add|remove|check`` against a real Postgres: the round trip,
exit codes, masking, ``--json`` and ``--expires``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from email_worker import cli
from email_worker.cli.suppression import parse_expiry
from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore

pytestmark = pytest.mark.integration

ADDRESS = "Carol.Admin@Example.com"
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(
    db: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Invoke:
    monkeypatch.setenv("EMAIL_WORKER_DATABASE_URL", database_url)

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.main(["suppression", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_add_check_list_remove_round_trip(run: Invoke, db: Database) -> None:
    assert run("check", ADDRESS) == (1, "not suppressed\n", "")
    code, out, _ = run("check", ADDRESS, "--json")
    assert code == 1 and json.loads(out) == {"suppressed": False, "reason": None}

    code, out, _ = run("add", ADDRESS, "--expires", "30d", "--detail", "ticket 42")
    assert code == 0 and out.startswith("suppressed: manual, expires 20")
    code, out, _ = run("check", "carol.admin@example.COM")
    assert (code, out) == (0, "manual\n")
    code, out, _ = run("check", ADDRESS, "--json")
    # Exactly the contract's object (CONTRACT 15), and no address printed.
    assert code == 0 and json.loads(out) == {"suppressed": True, "reason": "manual"}
    code, out, _ = run("list", "--json")
    (answer,) = [json.loads(line) for line in out.splitlines()]
    assert answer["source"] == "cli" and answer["detail"] == "ticket 42"
    expires = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)

    SuppressionStore(db).add("dave@example.org", "hard_bounce", "smtp", "550 5.1.1")
    code, out, _ = run("list")
    assert code == 0 and "carol.admin" not in out and "dave@" not in out
    assert "c***@example.com  manual  cli" in out and "d***@example.org  hard_bounce  smtp" in out
    code, out, _ = run("list", "--show-addresses", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {row["address"] for row in rows} == {"carol.admin@example.com", "dave@example.org"}

    assert run("remove", ADDRESS) == (0, "removed\n", "")
    assert run("check", ADDRESS)[0] == 1
    assert run("remove", ADDRESS) == (1, "not on the list\n", "")


def test_add_keeps_a_stronger_reason_and_says_so(run: Invoke, db: Database) -> None:
    SuppressionStore(db).add(ADDRESS, "complaint", "ses")
    code, out, _ = run("add", ADDRESS, "--reason", "unsubscribe")
    assert code == 0 and out == "already suppressed: complaint (a stronger reason is kept)\n"
    assert run("check", ADDRESS)[1] == "complaint\n"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "not-an-address"),
        ("add", "a b@example.com"),
        ("add", ADDRESS, "--expires", "tomorrow"),
        ("add", ADDRESS, "--expires", "2030-01-01T00:00:00"),  # no offset
    ],
)
def test_unreadable_input_exits_2_and_never_echoes_the_address(
    run: Invoke, args: tuple[str, ...]
) -> None:
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert args[1] not in err


def test_an_unreachable_database_exits_5_not_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("EMAIL_WORKER_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    assert cli.main(["suppression", "check", ADDRESS]) == 5
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "delta"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90))],
)
def test_durations(text: str, delta: timedelta) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry(text, now) == now + delta


def test_times_need_an_offset() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("2026-03-01T10:00:00Z", now) == datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_expiry("2026-03-01T10:00:00", now)
