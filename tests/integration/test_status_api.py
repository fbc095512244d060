"""The read-only status API on the health port, after real traffic through the worker: the
token, the API being off without one (unless opened), page size and depth bounds."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from email_worker.ledger.db import Database
from email_worker.ops.status_api import MAX_DEPTH, StatusApi, StatusReader
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def probe(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status)


def message(request_id: str, batch: str, **extra: Any) -> dict[str, Any]:
    body = {
        "request_id": request_id,
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.com"},
        "metadata": {"batch_id": batch},
    }
    return body | extra


@pytest.fixture
def traffic(stack: Stack) -> tuple[Stack, int, list[str], str, str]:
    """Three delivered and one failed notification of one batch, through a worker whose status
    API needs a token."""
    port = free_port()
    stack.start_worker(http_port=port, status_api_token=TOKEN)
    batch, failed = f"batch-{uuid.uuid4().hex[:8]}", f"st-{uuid.uuid4().hex[:12]}"
    delivered = [f"st-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for n, request_id in enumerate(delivered):
        stack.publish(message(request_id, batch, to_email=f"user{n}@example.com"))
    stack.publish(message(failed, batch, template_code="missing", to_email="x@example.com"))
    wait_for(lambda: all(stack.status(r) == "sent" for r in delivered), 20, "deliveries")
    wait_for(lambda: stack.status(failed) == "failed", 20, "the failure")
    return stack, port, delivered, failed, batch


def test_single_notification_status_without_address(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    _, port, delivered, failed, batch = traffic
    code, body = get(port, f"/api/v1/notifications/{delivered[0]}")
    assert code == 200 and body["success"] is True and body["error"] is None
    data = body["data"]
    assert data["status"] == "delivered" and data["ledger_status"] == "sent"
    assert data["request_id"] == data["notification_id"] == delivered[0]
    assert data["attempts"] == 1 and data["batch_id"] == batch
    assert data["template_code"] == "welcome" and data["failure_reason"] is None
    assert data["sent_at"].endswith("Z") and data["created_at"].endswith("Z")
    assert "@" not in json.dumps(body)  # no address, no Message-ID
    assert "subject" not in data and "html_body" not in data
    code, body = get(port, f"/api/v1/notifications/{failed}")
    assert body["data"]["status"] == "failed"
    assert body["data"]["failure_reason"] == "template_not_found"
    code, body = get(port, "/api/v1/notifications/nope-unknown")
    assert code == 404 and body["success"] is False and body["error"] == "not_found"


def test_the_token_is_required_on_the_api_only(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    _, port, delivered, _, _ = traffic
    path = f"/api/v1/notifications/{delivered[0]}"
    for token in (None, "wrong", TOKEN + "x", ""):
        code, body = get(port, path, token)
        assert code == 401 and body["error"] == "unauthorized" and body["data"] is None
    assert get(port, path)[0] == 200
    assert get(port, path, "Bearer")[0] == 401  # "Bearer Bearer": a word is not the token
    for open_path in ("/health", "/metrics"):  # probes and scrapes stay open
        assert probe(port, open_path) == 200
    wait_for(lambda: probe(port, "/readyz") == 200, 20, "readiness without a token")


def test_without_a_token_the_api_is_off_unless_opened_explicitly(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    stack, _, delivered, _, batch = traffic
    off, opened, both = free_port(), free_port(), free_port()
    stack.start_worker(http_port=off)
    stack.start_worker(http_port=opened, status_api_open=True)
    stack.start_worker(http_port=both, status_api_open=True, status_api_token=TOKEN)
    paths = [
        f"/api/v1/notifications/{delivered[0]}",
        "/api/v1/notifications",
        f"/api/v1/batches/{batch}",
    ]
    for path in paths:
        for token in (None, TOKEN):
            code, body = get(off, path, token)
            assert code == 404 and body["success"] is False, path
            assert "off" in body["message"]
        assert get(opened, path, None)[0] == 200, path
        assert get(both, path, None)[0] == 401, path  # a configured token always applies
        assert get(both, path, TOKEN)[0] == 200, path
    for open_path in ("/health", "/metrics"):
        assert probe(off, open_path) == 200
    wait_for(lambda: probe(off, "/readyz") == 200, 20, "readiness with the API off")


def test_list_paginates_filters_and_validates(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    _, port, delivered, failed, _ = traffic
    code, body = get(port, "/api/v1/notifications?limit=3&page=1")
    assert code == 200 and len(body["data"]) == 3
    assert body["meta"] == {
        "total": 4,
        "limit": 3,
        "page": 1,
        "total_pages": 2,
        "has_next": True,
        "has_previous": False,
    }
    _, second = get(port, "/api/v1/notifications?limit=3&page=2")
    assert second["meta"]["has_previous"] and not second["meta"]["has_next"]
    ids = {item["request_id"] for item in body["data"] + second["data"]}
    assert ids == {*delivered, failed}  # stable order: nothing repeated, nothing missing
    _, only_failed = get(port, "/api/v1/notifications?status=failed")
    assert [item["request_id"] for item in only_failed["data"]] == [failed]
    assert only_failed["meta"]["total"] == 1
    _, pending = get(port, "/api/v1/notifications?status=pending")
    assert pending["data"] == [] and pending["meta"]["total_pages"] == 0
    for query in ("limit=0", "limit=101", "page=0", "page=abc", "status=sent", "limit=1&limit=2"):
        code, body = get(port, f"/api/v1/notifications?{query}")
        assert code == 400 and body["error"] == "invalid_parameter", query


def test_pages_deeper_than_the_bound_are_refused_saying_so(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    _, port, _, _, _ = traffic
    deepest = MAX_DEPTH // 100  # the last page of 100 within the bound is served
    code, body = get(port, f"/api/v1/notifications?limit=100&page={deepest}")
    assert code == 200 and body["data"] == [] and body["meta"]["page"] == deepest
    assert get(port, f"/api/v1/notifications?page={MAX_DEPTH // 20}")[0] == 200  # limit 20
    for query in (
        f"limit=100&page={MAX_DEPTH // 100 + 1}",
        f"page={MAX_DEPTH // 20 + 1}",
        "limit=1&page=1000000",
        "page=9999999",
    ):
        code, body = get(port, f"/api/v1/notifications?{query}")
        assert code == 400 and body["error"] == "page_too_deep", query
        assert str(MAX_DEPTH) in body["message"] and body["data"] is None


def test_batch_progress(traffic: tuple[Stack, int, list[str], str, str]) -> None:
    _, port, _, _, batch = traffic
    code, body = get(port, f"/api/v1/batches/{batch}")
    assert code == 200
    assert body["data"] == {
        "batch_id": batch,
        "total": 4,
        "delivered": 3,
        "pending": 0,
        "failed": 1,
        "bounced": 0,
        "complained": 0,
        "progress_percent": 100.0,
        "complete": True,
    }
    assert get(port, "/api/v1/batches/no-such-batch")[0] == 404


def test_content_only_when_the_operator_allows_it(
    traffic: tuple[Stack, int, list[str], str, str],
) -> None:
    stack, _, delivered, _, _ = traffic
    db = Database(stack.database_url, pool_size=1)
    try:
        hidden = StatusApi(StatusReader(db, expose_content=False), token=None, open_access=True)
        shown = StatusApi(StatusReader(db, expose_content=True), token=None, open_access=True)
        path = f"/api/v1/notifications/{delivered[1]}"
        assert "user1@example.com" not in json.dumps(hidden(path, None)[1])
        data = shown(path, None)[1]["data"]
        assert data["recipient"] == "user1@example.com" and data["subject"] == "Hello Ada"
        listed = shown("/api/v1/notifications?limit=100", None)[1]["data"]
        assert all("html_body" not in item for item in listed)  # bodies: single view only
    finally:
        db.close()
