"""Hostile messages through the real worker process, each with its expected end: a reason code
in ``failed.queue`` or a delivery that carries the attack inertly. The worker stays up, its JSON
log names no recipient (not even one given as a ``correlation_id``), every message ends in
exactly one place (ledger checker), and no URL a message carries is ever contacted: an
"attacker" HTTP server on loopback must see nothing, even through an allow-listed name
(``localhost``) that resolves to it."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from email_worker.app.build import callback_sender
from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.config import Settings
from email_worker.ledger.db import Database
from tests.support.http import FakeHttpServer, Reply
from tests.support.ledger_check import DELIVERED, LedgerCheck, callbacks_from, copies_from
from tests.support.ledger_classify import Request
from tests.support.stack import CALLBACK_PATH, TEMPLATE, Stack

pytestmark = pytest.mark.integration

DOMAIN = "example.com"


@pytest.fixture
def attacker() -> Iterator[FakeHttpServer]:
    """The internal service an SSRF would reach: it must never receive a request."""
    server = FakeHttpServer().start()
    server.route("POST", "/", Reply(200, {"pwned": True}))
    try:
        yield server
    finally:
        server.stop()


def valid(key: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": key,
        "template_code": "welcome",
        "to_email": f"{key}@{DOMAIN}",
        "variables": {"name": "Ada", "link": "https://example.com/x"},
    }
    body.update(extra)
    return body


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def raw(key: str, text: str) -> bytes:
    return text.replace("KEY", key).encode()


def injected(key: str, value: str) -> dict[str, Any]:
    return valid(key, variables={"name": value, "link": "l"})


# (label, body builder, expected end). Builders take the request key.
TABLE: list[tuple[str, Any, str]] = [
    ("utf8", lambda k: b'{"request_id": "' + k.encode() + b'", "x": "\xff\xfe"}', "invalid_json"),
    ("truncated", lambda k: raw(k, '{"request_id": "KEY", "template_code": '), "invalid_json"),
    ("array", lambda k: raw(k, '["KEY"]'), "invalid_message"),
    ("string", lambda k: raw(k, '"KEY"'), "invalid_message"),
    ("deep", lambda k: valid(k, variables=nested(200)), "invalid_json"),
    ("oversized", lambda k: valid(k, variables={"x": "a" * 300_000}), "too_large"),
    (
        "dupkeys",
        lambda k: raw(k, '{"request_id": "KEY", "request_id": "other", "template_code": "w"}'),
        "invalid_json",
    ),
    ("nan", lambda k: raw(k, '{"request_id": "KEY", "priority": NaN}'), "invalid_json"),
    ("type-code", lambda k: valid(k, template_code=5), "invalid_message"),
    ("type-vars", lambda k: valid(k, variables=["a"]), "invalid_message"),
    ("type-prio", lambda k: valid(k, priority="urgent"), "invalid_message"),
    ("type-kind", lambda k: valid(k, notification_type="sms"), "wrong_type"),
    (
        "id-ctrl",
        lambda k: raw(k, '{"request_id": "KEY\\u0000", "template_code": "w"}'),
        "invalid_json",
    ),
    ("rcpt-bad", lambda k: valid(k, to_email="not-an-address"), "recipient_invalid"),
    ("rcpt-two", lambda k: valid(k, to_email=f"a-{k}@{DOMAIN}, b@{DOMAIN}"), "recipient_invalid"),
    ("rcpt-list", lambda k: valid(k, to_email=[f"a-{k}@{DOMAIN}"]), "recipient_invalid"),
    ("rcpt-name", lambda k: valid(k, to_email=f"Eve <e-{k}@{DOMAIN}>"), "recipient_invalid"),
    (
        "rcpt-crlf",
        lambda k: valid(k, to_email=f"{k}@{DOMAIN}\r\nBcc: x@evil.test"),
        "recipient_invalid",
    ),
    ("rcpt-clash", lambda k: valid(k, email=f"other-{k}@{DOMAIN}"), "recipient_invalid"),
    ("rcpt-none", lambda k: {"request_id": k, "template_code": "welcome"}, "recipient_missing"),
    ("hdr-crlf", lambda k: injected(k, "x\r\nBcc: evil@evil.test"), "unsafe_content"),
    ("hdr-lf", lambda k: injected(k, "x\nBcc: evil@evil.test"), "unsafe_content"),
    ("hdr-word", lambda k: injected(k, "=?utf-8?q?x=0D=0ABcc:_evil@evil.test?="), "unsafe_content"),
    ("hdr-u2028", lambda k: injected(k, "x\u2028Bcc: evil@evil.test"), "unsafe_content"),
    ("hdr-u2029", lambda k: injected(k, "x\u2029y"), "unsafe_content"),
    ("hdr-nel", lambda k: injected(k, "x\x85y"), "unsafe_content"),
    ("hdr-nul", lambda k: injected(k, "x\x00y"), "invalid_json"),  # NUL: refused at the door
    ("hdr-esc", lambda k: injected(k, "x\x1b[2Jy"), "unsafe_content"),
    ("hdr-tab", lambda k: injected(k, "x\x0bBcc: evil@evil.test"), "unsafe_content"),
    (
        "id-ctrl2",
        lambda k: raw(k, '{"request_id": "KEY\\u0007", "template_code": "w"}'),
        "invalid_message",
    ),
    (
        "hdr-unsub",
        lambda k: valid(k, template_code="unsub", variables={"name": "A", "link": "x\r\nBcc: e"}),
        "unsafe_content",
    ),
    ("tpl-expr", lambda k: injected(k, "{{ 7*7 }}{% if true %}IF{% endif %}"), DELIVERED),
    ("tpl-attr", lambda k: injected(k, "{{ ''.__class__.__mro__ }}"), DELIVERED),
    ("env-v9", lambda k: {"version": 9, "payload": valid(k)}, "invalid_message"),
    (
        "env-deep",
        lambda k: {
            "success": True,
            "data": {"success": True, "data": {"pattern": "p", "data": valid(k)}},
        },
        "invalid_message",
    ),
    ("env-str", lambda k: {"pattern": "email", "data": json.dumps(valid(k))}, "invalid_message"),
    ("corr-address", lambda k: valid(k, correlation_id=f"{k}@exämple.com"), DELIVERED),
    (
        "corr-invalid",
        lambda k: valid(k, correlation_id=f"{k}@exämple.com", priority="x"),
        "invalid_message",
    ),
    (
        "env-mixed",
        lambda k: {"pattern": "email", "data": valid(k), "to": "x@evil.test"},
        "invalid_message",
    ),
]

SSRF_HOSTS = [
    "127.0.0.1:{port}",
    "localhost:{port}",  # allow-listed by name, and resolves to the attacker: refused at connect
    "[::1]:{port}",
    "[::ffff:127.0.0.1]:{port}",
    "[::ffff:7f00:1]:{port}",
    "[64:ff9b::7f00:1]:{port}",
    "[2002:7f00:1::]:{port}",
    "2130706433:{port}",
    "0x7f.1:{port}",
    "127.1:{port}",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "169.254.169.254",
    "[fe80::1]",
    "user:pw@example.com@127.0.0.1:{port}",
]


class Redirector(ThreadingHTTPServer):
    """An allow-listed callback endpoint (listed by its exact address, 127.0.0.2) that answers
    every POST with a redirect to the attacker: the redirect must not be followed."""

    def __init__(self, target: str) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.paths.append(self.path)
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.2", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.2:{self.server_address[1]}"


ALLOWED = ["localhost", "127.0.0.2"]


def test_hostile_messages_each_end_in_their_one_place(
    stack: Stack, attacker: FakeHttpServer, tmp_path: Path
) -> None:
    port = attacker.url.rpartition(":")[2]
    redirector = Redirector(f"{attacker.url}/")
    stack.http.route(
        "GET",
        "/api/v1/templates/unsub",
        Reply(200, {**TEMPLATE, "list_unsubscribe": "<https://example.com/u?{{ link }}>"}),
    )
    check = stack.ledger_check()
    for label, build, expect in TABLE:
        key = f"{label}-{uuid.uuid4().hex[:6]}"
        body = build(key)
        recipient = f"{key}@{DOMAIN}" if expect == DELIVERED else None
        check.add(key, body=body, recipient=recipient, expect=expect)
    ssrf: dict[str, Request] = {}
    for host in SSRF_HOSTS:
        key = f"ssrf-{uuid.uuid4().hex[:6]}"
        ssrf[host] = check.add(
            key, body=valid(key, callback_url=f"http://{host.format(port=port)}/")
        )
    key = f"redirect-{uuid.uuid4().hex[:6]}"
    redirect = check.add(key, body=valid(key, callback_url=f"{redirector.url}/hook"))
    # The user service is a URL too: a user_id cannot steer the request elsewhere.
    key = f"ssrf-user-{uuid.uuid4().hex[:6]}"
    check.add(
        key,
        body={"request_id": key, "template_code": "welcome", "user_id": f"@127.0.0.1:{port}/"},
        recipient=None,
        expect="recipient_unknown",
    )
    log = tmp_path / "worker.log"
    try:
        with stack.spawn(log=log, callback_allowed_hosts=ALLOWED) as process:
            check.publish()
            report = stack.settle_and_check(check, 40)
            assert process.poll() is None, "the worker died"
            deliver_callbacks(stack.settings(callback_allowed_hosts=ALLOWED))
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        assert report.ok, report.summary()
        final = check.check(copies_from(stack.smtp.messages))
        assert final.ok, final.summary()
        assert attacker.seen() == [], "a URL from a message was contacted"
        assert redirector.paths == ["/hook"]  # allow-listed by address; its redirect not followed
        errors = last_callback_errors(stack)
        assert errors[ssrf["localhost:{port}"].key] == "AddressNotAllowed"
        assert errors[redirect.key] == "HTTP 302"
        gateway = {key for key, _ in callbacks_from(stack.http.seen("POST", CALLBACK_PATH))}
        assert {r.key for r in ssrf.values() if r.key not in errors} <= gateway
        assert_templates_rendered_literally(stack)
        assert_no_pii(log, check)
    finally:
        redirector.shutdown()
        redirector.server_close()


def last_callback_errors(stack: Stack) -> dict[str, str]:
    """The last error of each request's undelivered callback, by request id."""
    rows = stack.query(
        "SELECT request_id, last_error FROM callback_outbox WHERE last_error IS NOT NULL"
    )
    return {row["request_id"]: row["last_error"] for row in rows}


def deliver_callbacks(settings: Settings) -> None:
    """What ``email-worker callbacks`` does with each outbox row, here in-process: the same
    sender (``app.build.callback_sender``), so the same checks where it connects."""
    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    http = callback_sender(settings)
    try:
        dispatcher = CallbackDispatcher(db, http, secret=None, lease_seconds=5, max_age_hours=1)
        with db.transaction() as cur:
            cur.execute("SELECT id FROM callback_outbox ORDER BY id")
            ids = [row[0] for row in cur.fetchall()]
        for outbox_id in ids:
            dispatcher.deliver(outbox_id)
    finally:
        http.close()
        db.close()


def assert_templates_rendered_literally(stack: Stack) -> None:
    subjects = [str(m.parsed()["Subject"]) for m in stack.smtp.messages]
    assert "Hello {{ 7*7 }}{% if true %}IF{% endif %}" in subjects
    assert "Hello {{ ''.__class__.__mro__ }}" in subjects
    assert not any("49" in s or "<class" in s for s in subjects)


def assert_no_pii(log: Path, check: LedgerCheck) -> None:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    assert lines, "the worker logged nothing"
    for line in lines:
        json.loads(line)  # every line is JSON
    text = log.read_text(encoding="utf-8", errors="replace")
    for request in check.requests:
        local = request.key
        assert f"{local}@" not in text, f"an address of {local} was logged"
    assert "evil@evil.test" not in text
