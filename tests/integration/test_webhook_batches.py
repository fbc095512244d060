"""A big signed SendGrid Event Webhook POST through the whole worker on real Postgres and its
own HTTP port: 3,000 events (delivered, bounce, blocked, dropped, spamreport, deferred,
unsubscribes; for known and unknown messages; several about one request or one address) end
in exactly the database state that POSTing them one by one does.

Two disjoint worlds in one database, built alike: world ``a`` gets the one big POST, world
``b`` the 3,000 single-event POSTs; their states are compared with the world's name taken out
of every id and address. Callbacks are not delivered (a fake notifier records hand-overs), so
nothing moves the outbox after the POSTs."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore
from tests.fakes import FakeNotifier
from tests.support import webhooks as w
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

EVENTS, KNOWN, ADDRESSES = 3000, 300, 400
# (event, extra fields): what SendGrid sends, the non-reports included.
SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("delivered", {"response": "250 OK"}),
    ("deferred", {"response": "400 try again later", "attempt": "5"}),
    ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown user"}),
    ("bounce", {"type": "blocked", "status": "5.7.1", "reason": "550 5.7.1 blocked"}),
    ("dropped", {"reason": "Bounced Address", "status": "5.0.0"}),
    ("dropped", {"reason": "Invalid"}),
    ("dropped", {"reason": "Unsubscribed Address"}),
    ("dropped", {"reason": "Spam Reporting Address"}),
    ("dropped", {"reason": "Unknown"}),
    ("spamreport", {}),
    ("unsubscribe", {}),
    ("group_unsubscribe", {"asm_group_id": 1}),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(port: int, signed: w.Signed) -> tuple[int, dict[str, Any]]:
    """``w.post`` with room for a slow answer (the point of the measurement)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{signed.path}", data=signed.body, method="POST"
    )
    for name, value in signed.headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


def _seed(db: Database, world: str) -> None:
    """KNOWN requests of ``world`` in several states, most with a delivered callback, and a
    few suppression entries (one expired) that reports will refresh or outrank."""
    requests, outbox = [], []
    for n in range(KNOWN):
        status = ("sent", "sent", "sent", "unknown", "failed")[n % 5]
        rid = f"{world}-req-{n}"
        requests.append((rid, status, f"n-{rid}", f"c-{rid}", _address(world, n), _mid(world, n)))
        if n % 3:
            outbox.append((f"msg_{rid}", rid, f"n-{rid}", f"c-{rid}"))
    with db.transaction() as cur:
        cur.executemany(
            "INSERT INTO email_requests (request_id, payload_hash, status, notification_id,"
            " correlation_id, recipient, message_id) VALUES (%s, 'h', %s, %s, %s, %s, %s)",
            requests,
        )
        cur.executemany(
            "INSERT INTO callback_outbox (webhook_id, request_id, notification_id,"
            " correlation_id, status, event_at, callback_url, state)"
            " VALUES (%s, %s, %s, %s, 'delivered', now(), 'http://gw.test/status', 'delivered')",
            outbox,
        )
    store = SuppressionStore(db)
    store.add(_address(world, 1), "unsubscribe", "cli")
    store.add(_address(world, 2), "manual", "cli", "kept")
    store.add(_address(world, 3), "complaint", "cli", "strongest")
    store.add(_address(world, 4), "complaint", "cli", "expired")
    with db.transaction() as cur:
        cur.execute(
            "UPDATE suppressions SET expires_at = now() - interval '1 day' WHERE address = %s",
            (_address(world, 4),),
        )


def _address(world: str, n: int) -> str:
    return f"user{n % ADDRESSES}@{world}.example"


def _mid(world: str, n: int) -> str:
    return f"<{world}-{n}@acme.test>"


def _events(world: str) -> list[dict[str, Any]]:
    """The same EVENTS for every world (one seed), only the world's names differ."""
    rng = random.Random(20261208)
    events = []
    for _ in range(EVENTS):
        event, fields = rng.choice(SHAPES)
        n = rng.randrange(KNOWN)
        known = rng.random() < 0.7
        mid = _mid(world, n) if known else _mid(world, KNOWN + rng.randrange(KNOWN))
        # Mostly the request's own recipient; sometimes another address of the world.
        address = _address(world, n if rng.random() < 0.8 else rng.randrange(ADDRESSES))
        events.append(w.sendgrid_event(event, address, mid, **fields))
    return events


def _state(db: Database, world: str) -> dict[str, Any]:
    """Everything a report can change in ``world``, with the world's name taken out."""
    queries = {
        "requests": "SELECT request_id, status, failure_reason, failure_detail, lease_owner,"
        " retry_due_at IS NULL FROM email_requests WHERE request_id LIKE %s ORDER BY request_id",
        "events": "SELECT request_id, event, status, reason, detail FROM email_events"
        " WHERE request_id LIKE %s ORDER BY request_id, id",
        # The hold before the hand-over, from the row's own time (not now(): the worlds are
        # compared seconds apart).
        "outbox": "SELECT request_id, status, state, error, callback_url,"
        " extract(epoch FROM next_attempt_at - event_at)::integer FROM callback_outbox"
        " WHERE request_id LIKE %s ORDER BY request_id, id",
        "suppressions": "SELECT address, reason, source, detail, expires_at IS NULL,"
        " first_seen > now() - interval '1 hour' FROM suppressions WHERE address LIKE %s"
        " ORDER BY address",
    }
    patterns = {
        "requests": f"{world}-%",
        "events": f"{world}-%",
        "outbox": f"{world}-%",
        "suppressions": f"%@{world}.example",
    }
    state: dict[str, Any] = {}
    with db.transaction() as cur:
        for name, sql in queries.items():
            cur.execute(sql, (patterns[name],))
            state[name] = [
                tuple(
                    value.replace(f"{world}-", "W-").replace(f"@{world}.", "@W.")
                    if isinstance(value, str)
                    else value
                    for value in row
                )
                for row in cur.fetchall()
            ]
    return state


def test_a_3000_event_post_ends_as_posting_them_one_by_one(stack: Stack, db: Database) -> None:
    signer, notifier, port = w.SendGridSigner(), FakeNotifier(), _free_port()
    stack.start_worker(
        notifier=notifier, http_port=port, sendgrid_webhook_public_key=signer.public_key()
    )
    for world in ("a", "b"):
        _seed(db, world)
    assert _state(db, "a") == _state(db, "b")

    started = time.monotonic()
    status, batch = _post(port, signer.post(_events("a"), int(time.time())))
    elapsed = time.monotonic() - started
    print(f"\none signed SendGrid POST of {EVENTS} events: {elapsed:.2f} s")
    assert status == 200, batch

    totals = {"reports": 0, "suppressed": 0, "tied": 0}
    for event in _events("b"):
        status, one = _post(port, signer.post([event], int(time.time())))
        assert status == 200, one
        totals = {key: totals[key] + int(one[key]) for key in totals}
    assert {key: batch[key] for key in totals} == totals
    assert totals["reports"] > EVENTS // 2 and totals["tied"] > 0  # the mix did act

    a, b = _state(db, "a"), _state(db, "b")
    assert a == b
    # Every kind of effect happened (the comparison above is not of two empty states).
    statuses = {row[1] for row in a["requests"]}
    assert {"bounced", "complained", "sent"} <= statuses, statuses
    assert {row[1] for row in a["suppressions"]} >= {"hard_bounce", "complaint", "unsubscribe"}
    assert any(row[1] == "complained" and row[2] is None for row in a["events"])  # audit only
    failed = [row for row in a["outbox"] if row[1] == "failed"]
    assert failed and all(row[5] == 30 for row in failed)  # held for the hand-over
    # Each world's new callback rows were handed to the notifier, once each.
    with db.transaction() as cur:
        cur.execute(
            "SELECT split_part(request_id, '-', 1), count(*), count(DISTINCT id)"
            " FROM callback_outbox WHERE id = ANY(%s) GROUP BY 1 ORDER BY 1",
            (notifier.handed_over,),
        )
        handed = cur.fetchall()
    assert len(notifier.handed_over) == 2 * len(failed)
    assert handed == [("a", len(failed), len(failed)), ("b", len(failed), len(failed))]
