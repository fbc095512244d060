"""The template service client (CONTRACT section 5): one GET per template, a short freshness
cache, a bounded last-known-good copy and a circuit breaker in front of the service.

    fresh copy (younger than cache_seconds)   served, no request
    breaker open                              last-known-good copy, else DeferredFailure
    404                                       PermanentFailure(template_not_found); copy dropped
    2xx that is no template                   PermanentFailure(template_invalid); copy dropped
    other 4xx but 408, 425, 429               PermanentFailure(template_error); copy dropped
    401, 403                                  SystemicFailure(template_service_unauthorized)
    5xx, 408, 425, 429, timeout, refused      last-known-good copy, else TransientFailure

Permanent and systemic failures never count against the breaker (``templates_client.fetch``
classifies, ``templates_client.template`` reads the answer). Implements
``email_worker.ports.TemplateSource`` structurally; this package never imports
``email_worker``. Safe to share between worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from schemas.failures import (
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
)
from templates_client.breaker import Breaker, BreakerOpen
from templates_client.fetch import ServiceReasons, check_path, fetch_answer, fill_path
from templates_client.fields import Path
from templates_client.template import Template, template_from_answer, template_reader

log = logging.getLogger(__name__)

CacheKey = tuple[str, str | None]
UNAVAILABLE = Reason.TEMPLATE_SERVICE_UNAVAILABLE
DEFAULT_PATH = "/api/v1/templates/{template_code}"
PLACEHOLDERS = ("template_code", "language")
REASONS = ServiceReasons(
    service="template service",
    unavailable=UNAVAILABLE,
    not_found=Reason.TEMPLATE_NOT_FOUND,
    unauthorized=Reason.TEMPLATE_SERVICE_UNAUTHORIZED,
    rejected=Reason.TEMPLATE_ERROR,
    invalid=Reason.TEMPLATE_INVALID,
)


def check_template_path(path: str) -> str:
    """``TEMPLATE_PATH`` when usable; raises ``ValueError`` saying what is wrong."""
    return check_path(path, PLACEHOLDERS, "template_code")


@dataclass(frozen=True)
class _Entry:
    template: Template
    fetched_at: float


class TemplateCache:
    """A thread-safe LRU of the last good copy per (code, language), with its fetch time."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: CacheKey, entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, key: CacheKey) -> None:
        with self._lock:
            self._entries.pop(key, None)


class TemplateClient:
    """``get(code, language)`` a template from ``{base_url}{path}``.

    ``path`` is ``TEMPLATE_PATH`` (placeholders ``{template_code}`` and ``{language}``,
    percent-encoded; ``?language=xx`` is added when the path does not use ``{language}``);
    ``token`` is sent as ``Authorization: Bearer <token>``; ``fields`` is ``TEMPLATE_FIELDS``
    parsed; ``default_language`` fills ``{language}`` for a message without one."""

    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        *,
        path: str = DEFAULT_PATH,
        token: str | None = None,
        fields: Mapping[str, Path] | None = None,
        default_language: str | None = None,
        cache_seconds: float = 60,
        fail_max: int = 5,
        reset_seconds: float = 30,
        max_bytes: int = 1_048_576,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1024,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._path = check_template_path(path)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._reader = template_reader(fields)
        self._default_language = default_language
        self._http = http
        self._cache_seconds = cache_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        self._cache = TemplateCache(max_entries)
        self._breaker = Breaker("template-service", fail_max=fail_max, reset_seconds=reset_seconds)

    @property
    def breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, for readiness and metrics."""
        return self._breaker.state

    def get(self, code: str, language: str | None) -> Template:
        """The template, fresh from cache or service. Raises ``PermanentFailure`` with
        ``TEMPLATE_NOT_FOUND`` (404), ``TEMPLATE_INVALID`` (a 2xx that is no template) or
        ``TEMPLATE_ERROR`` (another 4xx), and ``SystemicFailure(TEMPLATE_SERVICE_UNAUTHORIZED)``
        (401/403: no stale copy then, consumption pauses); ``DeferredFailure`` while the
        breaker is open and ``TransientFailure`` when the service fails, in both cases only
        when no earlier good copy of this template is known (that copy is served instead)."""
        key = (code, language)
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached.fetched_at < self._cache_seconds:
            return cached.template
        try:
            template = self._breaker.call(lambda: self._fetch(code, language))
        except BreakerOpen as exc:
            if cached is not None:
                return self._stale(cached, code, "breaker open")
            raise DeferredFailure(UNAVAILABLE, "breaker open") from exc
        except PermanentFailure:
            self._cache.drop(key)  # deleted or broken upstream: stop serving the old copy
            raise
        except SystemicFailure:
            raise  # our credentials: pause and say so, rather than hide it behind old copies
        except TransientFailure as exc:
            if cached is not None:
                return self._stale(cached, code, exc.detail)
            raise
        self._cache.put(key, _Entry(template, self._clock()))
        return template

    def url(self, code: str, language: str | None) -> str:
        """The URL asked for ``code`` in ``language``."""
        filled = fill_path(
            self._path, template_code=code, language=language or self._default_language or ""
        )
        if language and "{language}" not in self._path:
            separator = "&" if "?" in filled else "?"
            filled += f"{separator}language={quote(language, safe='')}"
        return self._base + filled

    def _stale(self, cached: _Entry, code: str, why: str) -> Template:
        # While the breaker is open this happens for every message: keep it out of WARNING.
        level = logging.DEBUG if why == "breaker open" else logging.WARNING
        log.log(
            level,
            "serving the last known good template",
            extra={"template_code": code, "why": why, "age_s": self._clock() - cached.fetched_at},
        )
        return cached.template

    def _fetch(self, code: str, language: str | None) -> Template:
        answer = fetch_answer(
            self._http,
            self.url(code, language),
            REASONS,
            max_bytes=self._max_bytes,
            headers=self._headers,
        )
        return template_from_answer(code, language, answer, self._reader)
