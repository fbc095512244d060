"""The template as the worker sees it, whatever shape the template service answered in
(CONTRACT section 5), and the reading of one answer into it.

Default places, in the payload (the envelope's ``data`` or the bare object): subject from
``subject`` or ``title``; HTML from ``html_body``, ``html``, ``body`` or ``content``; text from
``text_body``, ``text`` or ``text_content``; ``version``; ``list_unsubscribe``.
``TEMPLATE_FIELDS`` replaces any of these with a dotted path from the answer's root
(``templates_client.fields``). An answer without a subject, or with neither body, is no
template: ``PermanentFailure(TEMPLATE_INVALID)`` naming what is missing and where it was looked
for. A template with a text body only gets an HTML body that shows that text, escaped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.failures import PermanentFailure, Reason
from templates_client.fields import FieldReader, Path

DEFAULT_PATHS: dict[str, tuple[Path, ...]] = {
    "subject": (("subject",), ("title",)),
    "html": (("html_body",), ("html",), ("body",), ("content",)),
    "text": (("text_body",), ("text",), ("text_content",)),
    "version": (("version",),),
    "list_unsubscribe": (("list_unsubscribe",),),
}
TEMPLATE_FIELD_NAMES = tuple(DEFAULT_PATHS)
# The text source shown as HTML: autoescaping off inside, then the whole rendered text escaped
# once (variables included); the markers sit on the first and last line, so the line numbers of
# errors still match the text source.
_TEXT_AS_HTML = (
    '<div style="white-space: pre-wrap">{%% autoescape false %%}{%% filter forceescape %%}'
    "%s{%% endfilter %%}{%% endautoescape %%}</div>"
)


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


def template_reader(overrides: Mapping[str, Path] | None = None) -> FieldReader:
    """The reader of template answers, with ``TEMPLATE_FIELDS`` parsed into ``overrides``."""
    return FieldReader(DEFAULT_PATHS, overrides or {})


def template_from_answer(
    code: str, language: str | None, answer: object, reader: FieldReader
) -> Template:
    """The ``Template`` in a decoded answer. Raises ``PermanentFailure(TEMPLATE_INVALID)``
    when it has no subject or neither body (the detail names the places looked at)."""
    try:
        subject, html, text, unsubscribe = (
            _first_text(reader.candidates(answer, name))
            for name in ("subject", "html", "text", "list_unsubscribe")
        )
        versions = reader.candidates(answer, "version")
    except ValueError as exc:  # not an object, or an envelope reporting failure
        raise PermanentFailure(Reason.TEMPLATE_INVALID, f"answer is no template: {exc}") from None
    missing = []
    if subject is None:
        missing.append(f"no subject ({reader.places('subject')})")
    if html is None and text is None:
        missing.append(f"no body ({reader.places('html')}; {reader.places('text')})")
    if subject is None or (html is None and text is None):  # spelled out for the type checker
        raise PermanentFailure(Reason.TEMPLATE_INVALID, "answer has " + ", ".join(missing))
    html = html if html is not None else _TEXT_AS_HTML % text
    return Template(
        code=code,
        language=language,
        subject=subject,
        html=html,
        text=text,
        version=_version(versions) or _content_hash(subject, html, text, unsubscribe),
        list_unsubscribe=unsubscribe,
    )


def _first_text(values: list[object]) -> str | None:
    return next((v for v in values if isinstance(v, str) and v.strip()), None)


def _version(values: list[object]) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()[:128]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _content_hash(*parts: str | None) -> str:
    canonical = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
