"""The status API's cancel without a database: which paths are a cancel, the token, the
``unseen`` flag, and the envelope and HTTP status of every outcome (CONTRACT sections 14, 19)."""

from __future__ import annotations

from typing import Any

import pytest

from email_worker.ledger.cancels import CancelResult
from email_worker.ops.cancel_api import cancel_target, post_route, unseen_flag
from email_worker.ops.status_api import StatusApi, StatusReader

TOKEN = "t0ken"


class Recorder:
    """A cancel that answers ``result`` and records what it was asked."""

    def __init__(self, result: CancelResult) -> None:
        self.result = result
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, request_id: str, unseen: bool) -> CancelResult:
        self.calls.append((request_id, unseen))
        return self.result


def api(result: CancelResult, **kw: Any) -> tuple[StatusApi, Recorder]:
    recorder = Recorder(result)
    reader: Any = object()  # a cancel never reads through the reader
    kw.setdefault("token", TOKEN)
    return StatusApi(StatusReader(reader, expose_content=False), cancel=recorder, **kw), recorder


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/notifications/r-1/cancel", "r-1"),
        ("/api/v1/notifications/a%2Fb%20c/cancel", "a/b c"),
        ("/api/v1/notifications//cancel", None),
        ("/api/v1/notifications/cancel", None),
        ("/api/v1/notifications/r-1", None),
        ("/api/v1/batches/b/cancel", None),
    ],
)
def test_cancel_paths(path: str, expected: str | None) -> None:
    assert cancel_target(path) == expected


def test_unseen_flag() -> None:
    assert unseen_flag("unseen=true") and unseen_flag("unseen=1") and unseen_flag("unseen=Yes")
    assert not unseen_flag("") and not unseen_flag("unseen=false") and not unseen_flag("x=true")


@pytest.mark.parametrize(
    ("result", "status", "error"),
    [
        (CancelResult("r-1", "cancelled", "scheduled", outbox_id=7), 200, None),
        (CancelResult("r-1", "already_cancelled", "failed", "cancelled"), 200, None),
        (CancelResult("r-1", "unknown"), 404, "not_found"),
        (CancelResult("r-1", "refused", "sent"), 409, "already_sent"),
        (CancelResult("r-1", "refused", "complained"), 409, "already_sent"),
        (CancelResult("r-1", "refused", "sending"), 409, "in_flight"),
        (CancelResult("r-1", "refused", "unknown"), 409, "maybe_delivered"),
        (CancelResult("r-1", "refused", "failed", "expired"), 409, "already_failed"),
    ],
)
def test_each_outcome_in_the_envelope(result: CancelResult, status: int, error: str | None) -> None:
    status_api, recorder = api(result)
    code, body, _ = status_api.post("/api/v1/notifications/r-1/cancel?unseen=true", "Bearer t0ken")
    assert recorder.calls == [("r-1", True)]
    assert code == status
    assert set(body) == {"success", "data", "error", "message", "meta"}
    assert (body["success"], body["error"]) == (error is None, error)
    assert body["message"] == result.explanation
    if error is None:
        assert body["data"]["failure_reason"] == "cancelled"
        assert body["data"]["cancelled_from"] == result.previous
    else:
        assert body["data"] is None


def test_the_token_is_required_and_nothing_is_cancelled_without_it() -> None:
    status_api, recorder = api(CancelResult("r-1", "cancelled", "scheduled"))
    for authorization in (None, "Bearer wrong", "Basic t0ken", TOKEN):
        code, body, headers = status_api.post("/api/v1/notifications/r-1/cancel", authorization)
        assert (code, body["error"], headers) == (
            401,
            "unauthorized",
            {"WWW-Authenticate": "Bearer"},
        )
    off, off_recorder = api(CancelResult("r-1", "cancelled"), token=None)
    assert off.post("/api/v1/notifications/r-1/cancel", None)[0] == 404
    assert recorder.calls == off_recorder.calls == []


def test_other_posts_and_bad_ids_are_refused() -> None:
    status_api, recorder = api(CancelResult("r-1", "cancelled"))
    assert status_api.post("/api/v1/notifications/r-1", "Bearer t0ken")[0] == 404
    code, body, _ = status_api.post("/api/v1/notifications/a%0Ab/cancel", "Bearer t0ken")
    assert (code, body["error"]) == (400, "invalid_parameter")
    assert recorder.calls == []


def test_the_health_server_route_answers_json() -> None:
    status_api, _ = api(CancelResult("r-1", "unknown"))
    route = post_route(status_api.post)
    code, payload, content_type, _ = route(
        "POST", "/api/v1/notifications/r-1/cancel", {"authorization": "Bearer t0ken"}, b""
    )
    assert (code, content_type) == (404, "application/json")
    assert b'"not_found"' in payload
