"""The template service client (CONTRACT section 5): one GET per template, a short freshness
cache, a bounded last-known-good copy and a circuit breaker in front of the service.

    fresh copy (younger than cache_seconds)   served, no request
    breaker open                              last-known-good copy, else DeferredFailure
    404                                       PermanentFailure(template_not_found); copy dropped
    5xx, timeout, refused, bad answer         last-known-good copy, else TransientFailure

Implements ``email_worker.ports.TemplateSource`` structurally; this package never imports
``email_worker``. Safe to share between worker threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from schemas.failures import DeferredFailure, PermanentFailure, Reason, TransientFailure
from templates_client.breaker import Breaker, BreakerOpen
from templates_client.template import Template
from templates_client.transport import get_object

log = logging.getLogger(__name__)

CacheKey = tuple[str, str | None]
UNAVAILABLE = Reason.TEMPLATE_SERVICE_UNAVAILABLE


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
    """``get(code, language)`` a template from ``{base_url}/api/v1/templates/{code}``."""

    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        *,
        cache_seconds: float = 60,
        fail_max: int = 5,
        reset_seconds: float = 30,
        max_bytes: int = 1_048_576,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1024,
    ) -> None:
        self._base = base_url.rstrip("/")
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
        """The template, fresh from cache or service. Raises
        ``PermanentFailure(TEMPLATE_NOT_FOUND)`` on 404; ``DeferredFailure`` while the breaker
        is open and ``TransientFailure`` when the service fails, in both cases only when no
        earlier good copy of this template is known (that copy is served instead)."""
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
            self._cache.drop(key)  # deleted upstream: stop serving the old copy
            raise
        except TransientFailure as exc:
            if cached is not None:
                return self._stale(cached, code, exc.detail)
            raise
        self._cache.put(key, _Entry(template, self._clock()))
        return template

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
        body = get_object(
            self._http,
            f"{self._base}/api/v1/templates/{quote(code, safe='')}",
            reason=UNAVAILABLE,
            not_found=Reason.TEMPLATE_NOT_FOUND,
            max_bytes=self._max_bytes,
            params={"language": language} if language else None,
        )
        return parse_template(code, language, body)


def parse_template(code: str, language: str | None, body: dict[str, Any]) -> Template:
    """A ``Template`` from the service's object. Raises
    ``TransientFailure(TEMPLATE_SERVICE_UNAVAILABLE)`` when the subject or the HTML body is
    missing or not text: a broken answer is the service's fault, not the message's."""
    subject = body.get("subject")
    html = _first_text(body, "html_body", "html", "body")
    if not isinstance(subject, str) or not subject.strip():
        raise TransientFailure(UNAVAILABLE, "answer has no subject")
    if html is None:
        raise TransientFailure(UNAVAILABLE, "answer has no html body")
    text = _first_text(body, "text_body", "text")
    unsubscribe = body.get("list_unsubscribe")
    unsubscribe = unsubscribe if isinstance(unsubscribe, str) and unsubscribe else None
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int | float) or version == "":
        version = _content_hash(subject, html, text, unsubscribe)
    return Template(
        code=code,
        language=language,
        subject=subject,
        html=html,
        text=text,
        version=str(version),
        list_unsubscribe=unsubscribe,
    )


def _first_text(body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _content_hash(*parts: str | None) -> str:
    canonical = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
