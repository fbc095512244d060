"""``POST /webhooks/<provider>`` on the worker's HTTP port: the ``HttpRoute`` that
``ops/health.py`` serves under ``PREFIX``, choosing the provider's endpoint and turning every
failure into an answer.

The health server has already read the body within ``MAX_ROUTE_BODY`` (1 MiB; 411 without a
``Content-Length``, 413 past it, nothing read). Answers here: 404 for a provider whose setting
is unset (the endpoint is off) or unknown; 405 for a method other than POST; 400 for a body
that is not the provider's report (``Malformed``); the endpoint's 401/403/406 when it is not
authentic; 503 when the database is unavailable (the provider retries); 500 for a fault of
ours. Only the provider, the answer and a type name are logged: never a header, a body, an
address or an exception's text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from email_worker.ledger.migrations import SchemaBehind
from email_worker.reports.model import Malformed
from email_worker.webhooks.endpoints import Answer, Headers, Refused
from schemas.failures import DeferredFailure

log = logging.getLogger(__name__)

PREFIX = "/webhooks/"
JSON = "application/json"
HttpAnswer = tuple[int, bytes, str, dict[str, str]]  # ops.health.Answer


class Endpoint(Protocol):
    provider: str

    def answer(self, headers: Headers, body: bytes) -> Answer: ...


def _fail(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"status": "refused", "error": error, "message": message}, headers or {}


class WebhookDispatcher:
    """The route. ``count(provider, result)`` is the metric hook; ``close`` releases what the
    endpoints hold (their database pool)."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        count: Callable[[str, str], None] = lambda provider, result: None,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._endpoints = {endpoint.provider: endpoint for endpoint in endpoints}
        self._count = count
        self._close = close

    @property
    def providers(self) -> list[str]:
        return sorted(self._endpoints)

    def close(self) -> None:
        self._close()

    def __call__(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> HttpAnswer:
        """Answer one request (``headers`` with lower-cased names). Never raises."""
        status, payload, extra = self.answer(method, target, headers, body)
        return status, json.dumps(payload).encode(), JSON, extra

    def answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        name = target.split("?", 1)[0].removeprefix(PREFIX).strip("/")
        endpoint = self._endpoints.get(name) if target.startswith(PREFIX) else None
        if endpoint is None:
            return _fail(404, "not_found", "no webhook endpoint here (is its setting set?)")
        if method != "POST":
            return _fail(405, "method_not_allowed", "webhooks are POSTed", {"Allow": "POST"})
        answer, result = self._answer(endpoint, headers, body)
        self._count(endpoint.provider, result)
        if answer[0] >= 400:
            log.warning(
                "webhook refused",
                extra={"provider": endpoint.provider, "http_status": answer[0], "result": result},
            )
        return answer

    def _answer(self, endpoint: Endpoint, headers: Headers, body: bytes) -> tuple[Answer, str]:
        try:
            return endpoint.answer(headers, body), "accepted"
        except Refused as refused:
            failed = _fail(refused.status, refused.result, refused.message, refused.headers)
            return failed, refused.result
        except Malformed as malformed:
            return _fail(400, "malformed", str(malformed)), "malformed"
        except (DeferredFailure, SchemaBehind) as down:
            log.warning("webhook deferred", extra={"error": type(down).__name__})
            return _fail(503, "unavailable", "the ledger is unavailable: retry later"), "deferred"
        except Exception as exc:  # a fault of ours: the provider retries
            log.error("webhook failed", extra={"error": type(exc).__name__})
            return _fail(500, "internal_error", "unexpected error"), "error"
