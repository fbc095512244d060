"""The status API's cancel (CONTRACT sections 14 and 19):
``POST /api/v1/notifications/{request_id}/cancel[?unseen=true]``.

``StatusApi.post`` checks the token as for every data endpoint and calls what is here: the
path's request_id, the cancel itself over the ledger (``ledger.cancels``) with its callback
handed to the notifier, and the answer in the spec's envelope: 200 when the request is
cancelled (now or before), 409 when it was sent, is in flight, may have been delivered or
already failed (``error`` says which), 404 when the worker has not seen it (``unseen=true``
records the cancel ahead of a message still waiting in the queue).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from email_worker.ledger.cancels import CancelResult, cancel_request
from email_worker.ledger.db import Database
from email_worker.ports import Notifier

PREFIX, SUFFIX = "/api/v1/notifications/", "/cancel"
DETAIL = "through the status API"
_TRUE = ("true", "1", "yes")
_REFUSAL_CODES = {
    "sent": "already_sent",
    "bounced": "already_sent",
    "complained": "already_sent",
    "sending": "in_flight",
    "unknown": "maybe_delivered",
    "failed": "already_failed",
}

Cancel = Callable[[str, bool], CancelResult]  # (request_id, unseen) -> what was done
JsonAnswer = tuple[int, dict[str, Any], dict[str, str]]
# health.HttpRoute: (method, target, lower-cased headers, body) -> (status, payload, type, headers)
RouteAnswer = tuple[int, bytes, str, dict[str, str]]


def cancel_target(path: str) -> str | None:
    """The request_id of a cancel path (URL-decoded), or None for any other path."""
    if path.startswith(PREFIX) and path.endswith(SUFFIX) and len(path) > len(PREFIX + SUFFIX):
        return unquote(path[len(PREFIX) : -len(SUFFIX)])
    return None


def unseen_flag(query: str) -> bool:
    values = parse_qs(query, max_num_fields=20).get("unseen", [])
    return bool(values) and values[-1].lower() in _TRUE


def ledger_canceller(db: Database, *, callback_url: str | None, notifier: Notifier) -> Cancel:
    """The cancel over ``db``: the callback goes to the request's earlier callback URL, else
    ``callback_url``, and is handed to ``notifier`` at once (beat re-drives it otherwise)."""

    def cancel(request_id: str, unseen: bool) -> CancelResult:
        result = cancel_request(
            db, request_id, detail=DETAIL, callback_url=callback_url, unseen=unseen
        )
        if result.outbox_id is not None:
            notifier.hand_over(result.outbox_id)
        return result

    return cancel


def cancel_answer(result: CancelResult) -> tuple[int, dict[str, Any] | None, str, str | None]:
    """``(HTTP status, data, message, error code)`` of a cancel."""
    if result.done:
        data = {
            "request_id": result.request_id,
            "status": "failed",
            "failure_reason": "cancelled",
            "cancelled_from": result.previous,
            "already_cancelled": result.outcome == "already_cancelled",
        }
        return 200, data, result.explanation, None
    if result.outcome == "unknown":
        return 404, None, result.explanation, "not_found"
    code = _REFUSAL_CODES.get(str(result.previous), "not_cancellable")
    return 409, None, result.explanation, code


def post_route(post: Callable[[str, str | None], JsonAnswer]) -> Callable[..., RouteAnswer]:
    """``StatusApi.post`` as an HTTP route of the health server (its POST side)."""

    def route(method: str, target: str, headers: Mapping[str, str], body: bytes) -> RouteAnswer:
        code, answer, extra = post(target, headers.get("authorization"))
        return code, json.dumps(answer).encode(), "application/json", extra

    return route
