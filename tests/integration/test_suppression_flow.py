"""The suppression list through the whole worker on real RabbitMQ, Postgres, SMTP and HTTP:
a hard bounce suppresses the next message without touching the relay, a policy refusal or
``SUPPRESS_HARD_BOUNCES=false`` does not, and RFC 8058 one-click unsubscribe works end to end.
No recipient address reaches any log record on the way."""

from __future__ import annotations

import logging
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from email_worker.ledger.db import Database
from email_worker.ledger.suppressions import SuppressionStore
from email_worker.suppression.entries import SuppressionReason
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

UNSUBSCRIBE_URL = "https://mail.example.test/u/{token}"
_LINK = re.compile(r"^<https://mail\.example\.test/u/([A-Za-z0-9_-]+)>$")


class Records(logging.Handler):
    """Every log record of the worker's process, raw (before any scrubbing filter), as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mail."):  # aiosmtpd: the test's SMTP server, not the worker
            return
        fields = " ".join(f"{key}={value}" for key, value in vars(record).items())
        self.lines.append(f"{record.getMessage()} {fields}")


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_no_address_logged(records: Records, *addresses: str) -> None:
    assert records.lines, "nothing was logged: the capture is broken"
    for address in addresses:
        local = address.partition("@")[0].lower()
        leaks = [line for line in records.lines if f"{local}@" in line.lower()]
        assert leaks == [], f"{address} appears in {len(leaks)} log record(s)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rid() -> str:
    return f"sup-{uuid.uuid4().hex[:12]}"


def message(request_id: str, to: str, priority: int = 1) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "to_email": to,
        "priority": priority,
        "variables": {"name": "Ada", "link": "https://example.com/start"},
    }


@pytest.fixture
def store(stack: Stack) -> Iterator[SuppressionStore]:
    db = Database(stack.database_url, pool_size=1)
    try:
        yield SuppressionStore(db)
    finally:
        db.close()


def test_a_hard_bounced_address_is_suppressed_without_reaching_the_relay(
    stack: Stack, store: SuppressionStore, records: Records
) -> None:
    address = "gone.user@example.com"
    stack.smtp.script(address, Behaviour(rcpt=f"550 5.1.1 <{address}>: Recipient unknown"))
    stack.start_worker()
    first, second = rid(), rid()
    stack.publish(message(first, "Gone.User@Example.com"))
    assert stack.dead_letter(first).headers.failure_reason == "recipient_rejected"
    entry = store.check(address)
    assert entry is not None
    assert (entry.reason, entry.source, entry.detail) == ("hard_bounce", "smtp", "550 5.1.1")
    rcpts, connections = stack.smtp.rcpt_count(address), stack.smtp.connections
    assert rcpts == 1

    stack.publish(message(second, address))
    record = stack.dead_letter(second)
    assert record.headers.failure_reason == "suppressed"
    assert record.headers.failure_detail == "hard_bounce"
    assert stack.status(second) == "failed"
    wait_for(lambda: bool(stack.callbacks(second)), 20, "the failed callback")
    callback = stack.callbacks(second)[-1]
    assert callback["status"] == "failed" and callback["error"] == "suppressed: hard_bounce"
    # Nothing of the second message reached the relay: no RCPT, no new connection.
    assert stack.smtp.rcpt_count(address) == rcpts
    assert stack.smtp.connections == connections
    assert_no_address_logged(records, address)


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({}, "550 5.7.1 Message refused by policy"),  # a policy block, not the mailbox
        ({"suppress_hard_bounces": False}, "550 5.1.1 no such user"),  # the switch is off
    ],
)
def test_a_refusal_that_must_not_suppress_leaves_the_list_alone(
    stack: Stack, store: SuppressionStore, overrides: dict[str, Any], refusal: str
) -> None:
    address = "kept@example.com"
    stack.smtp.script(address, Behaviour(rcpt=refusal))
    stack.start_worker(**overrides)
    first, second = rid(), rid()
    stack.publish(message(first, address))
    assert stack.dead_letter(first).headers.failure_reason == "recipient_rejected"
    stack.publish(message(second, address))  # the relay now accepts it
    wait_for(lambda: stack.status(second) == "sent", 20, "the second message to be sent")
    assert store.check(address) is None
    assert stack.smtp.rcpt_count(address) == 2


def post(port: int, token: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/unsubscribe/{token}",
        data=body,
        method="POST",
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def get(port: int, token: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}/unsubscribe/{token}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def token_in(stack: Stack, address: str) -> str:
    (sent,) = stack.emails_to(address)
    parsed = sent.parsed()
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = _LINK.match(str(parsed["List-Unsubscribe"]))
    assert found is not None, "List-Unsubscribe is not the configured one-click URL"
    return found.group(1)


def forged(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


FORM = "application/x-www-form-urlencoded"
ONE_CLICK = b"List-Unsubscribe=One-Click"


def test_one_click_unsubscribe_end_to_end(
    stack: Stack, store: SuppressionStore, records: Records
) -> None:
    port = free_port()
    stack.start_worker(http_port=port, unsubscribe_url=UNSUBSCRIBE_URL)
    ann, bob, vip = "ann.reader@example.com", "bob.reader@example.com", "vip.user@example.com"
    ids = {ann: rid(), bob: rid(), vip: rid()}
    stack.publish(message(ids[ann], ann, priority=1))
    stack.publish(message(ids[bob], bob, priority=4))
    stack.publish(message(ids[vip], vip, priority=5))  # PRIORITY_HIGH (default 5): not bulk
    wait_for(lambda: all(stack.status(r) == "sent" for r in ids.values()), 20, "three sends")
    vip_headers = stack.emails_to(vip)[0].parsed()
    assert vip_headers["List-Unsubscribe"] is None
    assert vip_headers["List-Unsubscribe-Post"] is None
    ann_token, bob_token = token_in(stack, ann), token_in(stack, bob)
    assert ann_token != bob_token
    assert "ann" not in ann_token.lower() and "example" not in ann_token.lower()

    # Forged or altered tokens: 404 to POST and GET, and nothing changes.
    for fake in (forged(ann_token), ann_token[:-4], "A" * 140, "x"):
        assert post(port, fake, ONE_CLICK, FORM) == 404
        assert get(port, fake)[0] == 404
    # GET shows a page whose form POSTs; it never unsubscribes (link scanners GET).
    code, page = get(port, bob_token)
    assert code == 200 and 'method="post"' in page and bob not in page
    # A POST without the one-click body is refused.
    assert post(port, bob_token, b"unsubscribe=yes", FORM) == 400
    assert store.check(bob) is None and store.check(ann) is None

    assert post(port, ann_token, ONE_CLICK, FORM) == 200
    entry = store.check(ann)
    assert entry is not None and (entry.reason, entry.source) == ("unsubscribe", "unsubscribe")
    assert post(port, ann_token, ONE_CLICK, FORM) == 200  # twice: the same entry
    boundary = "b0undary"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    assert post(port, bob_token, multipart, f"multipart/form-data; boundary={boundary}") == 200
    assert store.reason(bob) is SuppressionReason.UNSUBSCRIBE

    # The unsubscribe stops the next message, bulk or not (UNSUBSCRIBE_SCOPE=all, the default).
    bulk, urgent = rid(), rid()
    stack.publish(message(bulk, ann, priority=1))
    stack.publish(message(urgent, ann, priority=9))
    for refused in (bulk, urgent):
        record = stack.dead_letter(refused)
        assert (record.headers.failure_reason, record.headers.failure_detail) == (
            "suppressed",
            "unsubscribe",
        )
    assert len(stack.emails_to(ann)) == 1
    assert_no_address_logged(records, ann, bob, vip)


def test_a_template_list_unsubscribe_is_replaced_on_bulk_mail_and_kept_otherwise(
    stack: Stack,
) -> None:
    from tests.support.http import Reply
    from tests.support.stack import TEMPLATE

    template = TEMPLATE | {"list_unsubscribe": "<mailto:leave@example.com>"}
    stack.http.route("GET", "/api/v1/templates/own", Reply(200, template))
    stack.start_worker(unsubscribe_url=UNSUBSCRIBE_URL)
    bulk, urgent = rid(), rid()
    stack.publish(message(bulk, "list.reader@example.com") | {"template_code": "own"})
    stack.publish(message(urgent, "alert.reader@example.com", 7) | {"template_code": "own"})
    wait_for(lambda: stack.status(bulk) == stack.status(urgent) == "sent", 20, "both sends")
    token_in(stack, "list.reader@example.com")  # the worker's one-click header only
    kept = stack.emails_to("alert.reader@example.com")[0].parsed()
    assert kept["List-Unsubscribe"] == "<mailto:leave@example.com>"
    assert kept["List-Unsubscribe-Post"] is None
