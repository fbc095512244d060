"""Rendering a fetched template into checked email content (CONTRACT sections 5 and 9).

``TemplateRenderer`` implements the ``Renderer`` port. Templates are Jinja2 source rendered in
``render.sandbox.GuardedEnvironment`` (immutable sandbox, ``StrictUndefined``): the HTML
body with autoescaping, the subject, text body and ``List-Unsubscribe`` without. Variables are
passed as data, never compiled, so a variable holding ``{{ 7*7 }}`` renders literally. Every
part is streamed and stops as soon as it passes ``max_rendered_bytes``. The subject and
``List-Unsubscribe`` are stripped of surrounding whitespace and must pass the header check.
When a template has no text body it is derived from the rendered HTML.

Bounds (RELIABILITY rule 13): all parts of one email render under one budget
(``template_budget.render_budget``): no value over ``max_rendered_bytes``, at most
``ALLOWANCE_FACTOR`` times that built in all, at most ``max_render_seconds`` of the thread's CPU
time. Parts are compiled first, outside that budget, and cached by (code, language, version,
part) with their source; a part that cannot compile is cached as its failure, so a hostile
template costs its compile once.

Every failure is a ``PermanentFailure``: ``TEMPLATE_ERROR`` (syntax, missing variable, unsafe
operation, too large, too slow) or ``UNSAFE_CONTENT`` (a header value). Details name the part,
the line and at most a variable's identifier, never a variable's value.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from types import TracebackType
from typing import NamedTuple

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import new_context

from email_worker.ports import RenderedEmail
from email_worker.render.budget import BudgetExceeded, render_budget
from email_worker.render.headers import check_header_value
from email_worker.render.sandbox import GuardedEnvironment
from email_worker.render.textify import html_to_text
from schemas.failures import PermanentFailure, Reason
from templates_client.template import Template

_TEMPLATE_FILE = "<template>"  # the filename Jinja gives frames of templates made from strings
_MISSING = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]{0,63})' is undefined$")
_NO_ATTRIBUTE = re.compile(r"has no attribute '([A-Za-z_][A-Za-z0-9_]{0,63})'$")
ALLOWANCE_FACTOR = 32  # all values built by one render, in multiples of max_rendered_bytes


class _Key(NamedTuple):
    code: str
    language: str | None
    version: str
    part: str


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int


def _template_line(traceback: TracebackType | None) -> int | None:
    """The template line of the innermost template frame in ``traceback``."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _undefined_detail(error: jinja2.UndefinedError) -> str:
    message = error.message or ""
    if match := _MISSING.match(message):
        return f"missing variable '{match.group(1)}'"
    if match := _NO_ATTRIBUTE.search(message):
        return f"missing attribute '{match.group(1)}'"
    return "undefined value"  # the key was not an identifier: it may be user data


def _runtime_failure(part: str, error: Exception) -> PermanentFailure:
    """Map an error raised while rendering ``part``; exception texts can hold variable values
    (``int('alice@example.com')``), so only identifiers and type names are kept."""
    if isinstance(error, BudgetExceeded):
        return PermanentFailure(Reason.TEMPLATE_ERROR, f"{error.detail} ({part})")
    if isinstance(error, SecurityError):
        what = "unsafe template operation"
    elif isinstance(error, jinja2.UndefinedError):
        what = _undefined_detail(error)
    else:
        what = f"template failed: {type(error).__name__}"
    line = _template_line(error.__traceback__)
    where = f" ({part} line {line})" if line is not None else f" ({part})"
    return PermanentFailure(Reason.TEMPLATE_ERROR, what + where)


class TemplateRenderer:
    """Thread-safe; compiled templates are cached by (code, language, version, part)."""

    def __init__(
        self,
        max_rendered_bytes: int = 1_048_576,
        cache_size: int = 512,
        max_render_seconds: float = 0.5,
    ) -> None:
        self._max_bytes = max_rendered_bytes
        self._max_seconds = max_render_seconds
        self._cache_size = cache_size
        self._html = GuardedEnvironment(limit=max_rendered_bytes, autoescape=True)
        self._plain = GuardedEnvironment(limit=max_rendered_bytes, autoescape=False)
        # Each environment's globals as one plain dict. A template made by ``from_string``
        # sees ``ChainMap({}, env.globals)``, which Jinja copies into every render's context
        # key by key in Python (a third of a short template's render); a dict copies in C.
        self._globals: dict[jinja2.Environment, dict[str, object]] = {
            env: dict(env.globals) for env in (self._html, self._plain)
        }
        self._cache: OrderedDict[_Key, tuple[str, _Compiled]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def render(self, template: Template, variables: dict[str, object]) -> RenderedEmail:
        """Render all parts. Raises ``PermanentFailure(TEMPLATE_ERROR | UNSAFE_CONTENT)``."""
        parts = {"subject": template.subject, "html": template.html}
        if template.text:
            parts["text"] = template.text
        if template.list_unsubscribe:
            parts["list_unsubscribe"] = template.list_unsubscribe
        compiled = {part: self._compiled(template, part, source) for part, source in parts.items()}
        with render_budget(ALLOWANCE_FACTOR * self._max_bytes, self._max_seconds):
            rendered = {part: self._render(part, c, variables) for part, c in compiled.items()}
        subject = check_header_value("Subject", rendered["subject"].strip())
        unsubscribe = rendered.get("list_unsubscribe")
        if unsubscribe is not None:
            unsubscribe = check_header_value("List-Unsubscribe", unsubscribe.strip())
        html = rendered["html"]
        return RenderedEmail(
            subject=subject,
            html=html,
            text=rendered["text"] if "text" in rendered else html_to_text(html),
            template_code=template.code,
            template_version=template.version,
            list_unsubscribe=unsubscribe,
        )

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache))

    def _render(self, part: str, compiled: jinja2.Template, variables: dict[str, object]) -> str:
        try:
            return self._stream(compiled, variables, part)
        except PermanentFailure:
            raise
        except Exception as exc:  # anything a template can raise: all its own fault
            raise _runtime_failure(part, exc) from None

    def _stream(self, compiled: jinja2.Template, variables: dict[str, object], part: str) -> str:
        """Render chunk by chunk, stopping as soon as the output passes the cap in characters
        (so it never holds more than 4 bytes of UTF-8 per byte allowed), then checking its
        UTF-8 size exactly once it is whole. Encoding each of the thousands of chunks as it
        came cost a tenth of a digest's render."""
        limit = self._max_bytes
        chunks: list[str] = []
        size = 0
        # What ``compiled.generate`` does, without its generator around every chunk: the
        # template's own render function, and Jinja's traceback rewriting on failure (it gives
        # the template's line numbers to ``_template_line``).
        environment = compiled.environment
        flat = self._globals[environment]
        context = new_context(environment, compiled.name, compiled.blocks, variables, False, flat)
        try:
            for chunk in compiled.root_render_func(context):
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
        except Exception:
            environment.handle_exception()
        if size > limit:
            raise PermanentFailure(Reason.TEMPLATE_ERROR, f"rendered body too large ({part})")
        text = "".join(chunks)
        if not text.isascii():  # the exact size; and lone surrogates (valid JSON) fail here
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise PermanentFailure(
                    Reason.UNSAFE_CONTENT, f"rendered {part} is not valid unicode"
                ) from None
            if size > limit:
                raise PermanentFailure(Reason.TEMPLATE_ERROR, f"rendered body too large ({part})")
        return text

    def _compiled(self, template: Template, part: str, source: str) -> jinja2.Template:
        key = _Key(template.code, template.language, template.version, part)
        with self._lock:
            cached = self._cache.get(key)
            # The source is compared too: a service that reuses a version for new content
            # must not get the old compiled body.
            if cached is not None and cached[0] == source:
                self._cache.move_to_end(key)
                self._hits += 1
                return _unpack(cached[1])
            self._misses += 1
        compiled = self._compile(part, source)  # outside the lock: compiling is slow
        with self._lock:
            self._cache[key] = (source, compiled)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return _unpack(compiled)

    def _compile(self, part: str, source: str) -> _Compiled:
        """The compiled part, or the failure to report for it (cached like a success)."""
        env = self._html if part == "html" else self._plain
        try:
            return env.checked_template(source)  # type: ignore[no-any-return]
        except jinja2.TemplateSyntaxError as exc:
            detail = f"syntax error in {part} at line {exc.lineno}: {exc.message or ''}"
        except BudgetExceeded as exc:
            detail = f"{exc.detail} ({part})"
        except Exception as exc:  # e.g. RecursionError on absurdly nested source
            detail = f"cannot compile {part}: {type(exc).__name__}"
        return _Failed(detail)


class _Failed(NamedTuple):
    detail: str


_Compiled = jinja2.Template | _Failed


def _unpack(compiled: _Compiled) -> jinja2.Template:
    if isinstance(compiled, _Failed):
        raise PermanentFailure(Reason.TEMPLATE_ERROR, compiled.detail)
    return compiled
