"""Template and user services misbehaving (500s, timeouts, 404s, garbage, huge bodies) and the
breaker opening and recovering, under the ledger checker: transient faults end delivered once;
404s and 2xx answers that are no template / no user record (garbage, not an object, too large:
CONTRACT sections 5 and 6) end in ``failed.queue`` with their reason; nothing is lost."""

from __future__ import annotations

import uuid

import pytest

from tests.support.http import Reply
from tests.support.ledger_check import DELIVERED
from tests.support.stack import TEMPLATE, Stack, wait_for

pytestmark = pytest.mark.integration

OK = Reply(200, {"success": True, "data": TEMPLATE})
HUGE = Reply(200, b'{"subject": "' + b"x" * 3_000_000 + b'"}')

# template code → (scripted replies, expected end); the last reply repeats.
TEMPLATES: dict[str, tuple[tuple[Reply, ...], str]] = {
    "t500": ((Reply(500, "boom"), OK), DELIVERED),
    "tslow": ((Reply(200, {"data": TEMPLATE}, delay=1.5), OK), DELIVERED),
    "tgarbage": ((Reply(200, b"{not json"), OK), "template_invalid"),
    "tnotobject": ((Reply(200, [1, 2]), OK), "template_invalid"),
    "thuge": ((HUGE, OK), "template_invalid"),
    "tmissing": ((Reply(404, {"success": False}),), "template_not_found"),
}

# user id suffix → (scripted replies, expected end)
USERS: dict[str, tuple[tuple[Reply | None, ...], str]] = {
    "u500": ((Reply(503, "down"), None), DELIVERED),  # None: the record itself
    "uslow": ((Reply(200, {}, delay=1.5), None), DELIVERED),
    "ugarbage": ((Reply(200, b"<html>"), None), "recipient_unknown"),
    "u404": ((Reply(404, {"success": False}),), "recipient_unknown"),
}


def test_dependency_faults_end_in_one_place(stack: Stack) -> None:
    check = stack.ledger_check()
    for code, (replies, expect) in TEMPLATES.items():
        stack.http.route("GET", f"/api/v1/templates/{code}", *replies)
        check.add(f"{code}-{uuid.uuid4().hex[:6]}", template_code=code, expect=expect)
    for label, (user_replies, expect) in USERS.items():
        key = f"{label}-{uuid.uuid4().hex[:6]}"
        address = f"{key}@example.com"
        record = Reply(200, {"data": {"email": address, "name": "U", "preferences": {}}})
        script = [record if r is None else r for r in user_replies]
        stack.http.route("GET", f"/api/v1/users/{key}", *script)
        body = {
            "request_id": key,
            "template_code": "welcome",
            "user_id": key,
            "variables": {"link": "l"},
        }
        check.add(key, body=body, recipient=address, expect=expect)
    stack.start_worker(http_timeout=1.0, max_attempts=4, retry_delays=[0.3, 0.6])
    check.publish()
    report = stack.settle_and_check(check, 40, callbacks=True)
    assert report.ok, report.summary()
    dead = [e for _, (_, e) in (*TEMPLATES.items(), *USERS.items()) if e != DELIVERED]
    assert report.counts["dead_lettered"] == len(dead) == 6
    assert report.counts["delivered_once"] == len(TEMPLATES) + len(USERS) - len(dead)


def test_breaker_opens_defers_and_recovers(stack: Stack) -> None:
    stack.http.route("GET", "/api/v1/templates/flaky", Reply(503, "unavailable"))
    check = stack.ledger_check()
    for _ in range(6):
        check.add(f"brk-{uuid.uuid4().hex[:6]}", template_code="flaky")
    worker = stack.start_worker(concurrency=1, prefetch=1, max_attempts=3)
    check.publish()
    wait_for(lambda: worker.templates.breaker_state == "open", 20, "the breaker to open")
    calls = len(stack.http.seen("GET", "/api/v1/templates/flaky"))
    assert calls <= 3 + 1  # fail_max, then no calls while open
    wait_for(lambda: all(stack.status(r.key) == "pending" for r in check.requests), 20)
    assert stack.dead_letters() == []  # deferrals while open burn no attempt
    stack.http.route("GET", "/api/v1/templates/flaky", OK)
    report = stack.settle_and_check(check, 30)
    assert report.ok, report.summary()
    assert report.counts["delivered_once"] == 6
    assert worker.templates.breaker_state == "closed"
