"""The template as the worker sees it, whatever shape the template service answered in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """A fetched template. ``version`` is the service's version, or a content hash when the
    service gives none, so a compiled copy can be cached safely by (code, language, version)."""

    code: str
    language: str | None
    subject: str
    html: str
    text: str | None
    version: str
    list_unsubscribe: str | None = None
