"""The status API (``/api/v1/...``), its read model over the ledger, and its one write: the
cancel of CONTRACT section 14 (``POST .../{request_id}/cancel``, in ``cancel_api.py``).

``StatusReader`` holds the SQL (parameterised, read-only) and maps ledger states to the public
statuses: ``sent`` → ``delivered``; ``pending``, ``sending``, ``unknown``, ``scheduled`` →
``pending`` (an ``unknown`` send may or may not have reached the relay, and is re-driven; a
``scheduled`` one waits for its send_at); ``failed`` → ``failed``; ``bounced`` and
``complained`` stay themselves (a delivered message a provider then reported, CONTRACT section
15). ``StatusApi`` routes a
request, checks the bearer token in constant time and answers in the gateway's envelope
``{success, data, error, message, meta}``. Neither the recipient nor any content leaves unless
the operator sets ``status_api_expose_content``.

Access (CONTRACT section 19): with ``STATUS_API_TOKEN`` set, every data endpoint needs
``Authorization: Bearer <token>`` (401 otherwise). With no token the API is off (404 on every
``/api/`` path) unless ``STATUS_API_OPEN=true`` opens it to anyone who reaches the port. Lists
serve at most ``MAX_LIMIT`` rows a page and no page reaching past the first ``MAX_DEPTH`` rows
(OFFSET pagination reads and sorts every row it skips): deeper pages get a 400 ``page_too_deep``
that says so; a ``status`` filter narrows what there is to page through.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from email_worker.ledger.db import Database
from email_worker.ops.cancel_api import Cancel, cancel_answer, cancel_target, unseen_flag
from schemas.deadletter import rfc3339
from schemas.failures import DeferredFailure
from schemas.inbound import is_valid_id

log = logging.getLogger(__name__)

PUBLIC_STATUS = {
    "sent": "delivered",
    "pending": "pending",
    "sending": "pending",
    "unknown": "pending",
    "failed": "failed",
    "scheduled": "pending",  # held until its send_at (CONTRACT section 14)
    # Delivered, then reported by the provider (CONTRACT section 15): final, like failed.
    "bounced": "bounced",
    "complained": "complained",
}
PUBLIC_STATUSES = ("delivered", "pending", "failed", "bounced", "complained")
LEDGER_STATES = {
    public: tuple(state for state, mapped in PUBLIC_STATUS.items() if mapped == public)
    for public in PUBLIC_STATUSES
}
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
# A list page may reach at most this many rows deep (page * limit): OFFSET makes Postgres read
# and sort every row a page skips, so deeper pages would cost a scan and sort each.
MAX_DEPTH = 10_000
MAX_PAGE = 9_999_999  # what parses as a page number at all; MAX_DEPTH refuses far less
_NUMBER = re.compile(r"^[0-9]{1,7}$")
_COLUMNS = (
    "request_id, notification_id, correlation_id, status, attempts, template_code, "
    "template_version, batch_id, failure_reason, failure_detail, created_at, updated_at, sent_at,"
    " relay"
)
_LIST_CONTENT = ", recipient, message_id, subject"
_FULL_CONTENT = _LIST_CONTENT + ", smtp_reply, text_body, html_body"

Answer = tuple[int, dict[str, Any], dict[str, str]]


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _public(row: dict[str, Any]) -> dict[str, Any]:
    item = {k: (rfc3339(v) if isinstance(v, datetime) else v) for k, v in row.items()}
    item["ledger_status"] = item["status"]
    item["status"] = PUBLIC_STATUS.get(str(item["status"]), "pending")
    return item


class StatusReader:
    """Read-only queries over ``email_requests``. Raises ``DeferredFailure`` when Postgres is
    unavailable."""

    def __init__(self, db: Database, *, expose_content: bool) -> None:
        self._db = db
        self._expose = expose_content

    def one(self, request_id: str) -> dict[str, Any] | None:
        columns = _COLUMNS + (_FULL_CONTENT if self._expose else "")
        rows = self._rows(
            f"SELECT {columns} FROM email_requests WHERE request_id = %s", (request_id,)
        )
        return _public(rows[0]) if rows else None

    def page(self, status: str | None, limit: int, page: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total, rows)``, newest first (``created_at`` never changes: pages stay stable)."""
        states = list(LEDGER_STATES[status]) if status else list(PUBLIC_STATUS)
        columns = _COLUMNS + (_LIST_CONTENT if self._expose else "")
        with self._db.transaction() as cur:
            cur.execute("SELECT count(*) FROM email_requests WHERE status = ANY(%s)", (states,))
            row = cur.fetchone()
            total = int(row[0]) if row else 0
        rows = self._rows(
            f"SELECT {columns} FROM email_requests WHERE status = ANY(%s)"
            " ORDER BY created_at DESC, request_id DESC LIMIT %s OFFSET %s",
            (states, limit, (page - 1) * limit),
        )
        return total, [_public(r) for r in rows]

    def batch(self, batch_id: str) -> dict[str, int]:
        """Counts per public status of the requests carrying ``metadata.batch_id``."""
        counts = dict.fromkeys(PUBLIC_STATUSES, 0)
        for row in self._rows(
            "SELECT status, count(*) AS n FROM email_requests WHERE batch_id = %s GROUP BY status",
            (batch_id,),
        ):
            counts[PUBLIC_STATUS.get(row["status"], "pending")] += int(row["n"])
        return counts

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._db.transaction() as cur:
            cur.execute(sql, params)
            names = [column[0] for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _ok(data: Any, message: str, meta: dict[str, Any] | None = None) -> Answer:
    body = {"success": True, "data": data, "error": None, "message": message, "meta": meta}
    return 200, body, {}


def _fail(error: ApiError) -> Answer:
    body = {
        "success": False,
        "data": None,
        "error": error.error,
        "message": error.message,
        "meta": None,
    }
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    return error.status, body, headers


def _number(params: dict[str, list[str]], name: str, default: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1 or not _NUMBER.match(values[0]) or not 1 <= int(values[0]) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from 1 to {high}")
    return int(values[0])


def _status_filter(params: dict[str, list[str]]) -> str | None:
    values = params.get("status")
    if not values or values == [""]:
        return None
    if len(values) > 1 or values[0] not in LEDGER_STATES:
        names = ", ".join(LEDGER_STATES)
        raise ApiError(400, "invalid_parameter", f"status must be one of {names}")
    return values[0]


def _digest(token: str) -> bytes:
    # Compare fixed-length digests: compare_digest on the raw strings returns early on a
    # length mismatch, which tells a prober the token's length.
    return hashlib.sha256(token.encode()).digest()


class StatusApi:
    """``api(target, authorization)`` answers one GET under ``/api/v1``. Never raises.
    ``token`` (when set) is required as a bearer token; without one the API answers only when
    ``open_access`` is true, else 404 to everything (it is off)."""

    def __init__(
        self,
        reader: StatusReader,
        *,
        token: str | None,
        open_access: bool = False,
        cancel: Cancel | None = None,
    ) -> None:
        self._reader = reader
        self._cancel = cancel  # POST .../{request_id}/cancel (ops/cancel_api.py); None: 404
        self._token = _digest(token) if token else None
        self._off = self._token is None and not open_access
        if self._off:
            log.info("the status API is off: no STATUS_API_TOKEN (or STATUS_API_OPEN=true)")
        elif self._token is None:
            log.warning("the status API is open: anyone who reaches HTTP_PORT may read it")

    def __call__(self, target: str, authorization: str | None) -> Answer:
        return self._guarded(target, authorization, self._route)

    def post(self, target: str, authorization: str | None) -> Answer:
        """Answers one POST under ``/api/v1``: the cancel (CONTRACT section 14). Never raises."""
        return self._guarded(target, authorization, self._route_post)

    def _guarded(
        self, target: str, authorization: str | None, route: Callable[[SplitResult], Answer]
    ) -> Answer:
        try:
            self._authorize(authorization)
            return route(urlsplit(target))
        except ApiError as error:
            return _fail(error)
        except DeferredFailure:
            return _fail(ApiError(503, "database_unavailable", "the ledger is unreachable"))
        except Exception:  # answer in the envelope, never drop the connection
            log.exception("status API error")
            return _fail(ApiError(500, "internal_error", "unexpected error"))

    def _authorize(self, authorization: str | None) -> None:
        if self._off:
            raise ApiError(404, "not_found", "the status API is off: no token is configured")
        if self._token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        matches = hmac.compare_digest(_digest(given.strip()), self._token)
        if scheme.lower() != "bearer" or not matches:
            raise ApiError(401, "unauthorized", "a valid bearer token is required")

    def _route(self, target: SplitResult) -> Answer:
        path = target.path.rstrip("/")
        if path == "/api/v1/notifications":
            return self._list(target.query)
        for prefix, answer in (
            ("/api/v1/notifications/", self._one),
            ("/api/v1/batches/", self._batch),
        ):
            if path.startswith(prefix) and len(path) > len(prefix):
                return answer(unquote(path[len(prefix) :]))
        raise ApiError(404, "not_found", "no such endpoint")

    def _route_post(self, target: SplitResult) -> Answer:
        request_id = cancel_target(target.path.rstrip("/"))
        if request_id is None or self._cancel is None:
            raise ApiError(404, "not_found", "no such endpoint")
        if not is_valid_id(request_id):
            raise ApiError(400, "invalid_parameter", "request_id: 1-128 printable characters")
        result = self._cancel(request_id, unseen_flag(target.query))
        status, data, message, error = cancel_answer(result)
        if error is not None:
            raise ApiError(status, error, message)
        return _ok(data, message)

    def _one(self, request_id: str) -> Answer:
        found = self._reader.one(request_id)
        if found is None:
            raise ApiError(404, "not_found", "no notification with this request_id")
        return _ok(found, "notification status")

    def _list(self, query: str) -> Answer:
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=20)
        except ValueError as exc:
            raise ApiError(400, "invalid_parameter", "too many query parameters") from exc
        status = _status_filter(params)
        limit = _number(params, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        page = _number(params, "page", 1, MAX_PAGE)
        if page * limit > MAX_DEPTH:
            raise ApiError(
                400,
                "page_too_deep",
                f"pages reaching past row {MAX_DEPTH} are not served (page * limit must be at"
                f" most {MAX_DEPTH}): filter by status or fetch notifications by request_id",
            )
        total, rows = self._reader.page(status, limit, page)
        pages = math.ceil(total / limit)
        meta = {
            "total": total,
            "limit": limit,
            "page": page,
            "total_pages": pages,
            "has_next": page < pages,
            "has_previous": page > 1,
        }
        return _ok(rows, "notifications", meta)

    def _batch(self, batch_id: str) -> Answer:
        counts = self._reader.batch(batch_id)
        total = sum(counts.values())
        if total == 0:
            raise ApiError(404, "not_found", "no notification carries this batch_id")
        settled = total - counts["pending"]
        data = {
            "batch_id": batch_id,
            "total": total,
            **counts,
            "progress_percent": round(100 * settled / total, 1),
            "complete": counts["pending"] == 0,
        }
        return _ok(data, "batch progress")
