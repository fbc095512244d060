"""How a status callback looks to one gateway (CONTRACT section 7): the URL with its
placeholders filled, and the body with the operator's field names and extra fields.

``CallbackShape`` is one frozen value built from ``CALLBACK_FIELD_NAMES`` and
``CALLBACK_EXTRA_FIELDS``; the parsers here are what ``Settings`` validates those (and
``CALLBACK_URL``) with, so a bad value stops start-up naming its variable. The dispatcher
applies the shape when it *sends* a row, never when the row is written: the outbox keeps the
status event (ids, status, time, error, attempts, the URL as chosen) and its ``webhook-id``, so
a settings change reaches every callback sent after the restart, the backlog included, and
the ``webhook-id`` stays the same for a status event whatever shape carries it. The signature
is made over the bytes this module returns, the body as sent.

Placeholders are filled in the path and the query only, URL-encoded (``/``, ``?``, ``&``,
``#`` and ``@`` included), so a value from a message can never change the host, the port or
the scheme a callback goes to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from schemas.callback import CallbackStatus, StatusCallback

PLACEHOLDERS = ("notification_id", "request_id", "correlation_id", "status")
FIELDS = ("notification_id", "request_id", "correlation_id", "status", "timestamp", "error")
OPT_IN_FIELDS = ("attempts",)  # sent only when CALLBACK_FIELD_NAMES names them
MAX_EXTRA_BYTES = 4096
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ANY_PLACEHOLDER = re.compile(r"\{([^{}]{0,64})\}")
_FIELD_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$-]{0,63}")


@dataclass(frozen=True)
class CallbackEvent:
    """One status event as its outbox row keeps it."""

    notification_id: str
    request_id: str
    correlation_id: str
    status: CallbackStatus
    timestamp: str  # RFC 3339, UTC, Z suffix
    error: str | None
    attempts: int | None  # None for rows written before the outbox recorded it


@dataclass(frozen=True)
class CallbackShape:
    """The operator's renames (ours → theirs; '' drops the field) and extra fields."""

    renames: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def body(self, event: CallbackEvent) -> bytes:
        """The exact bytes to POST (and sign). Without renames or extra fields it is the
        contract's default body, ``StatusCallback``, as compact JSON."""
        model = StatusCallback(
            notification_id=event.notification_id,
            status=event.status,
            timestamp=event.timestamp,
            error=event.error,
            request_id=event.request_id,
            correlation_id=event.correlation_id,
            attempts=event.attempts,
        )
        if not self.renames and not self.extra:
            return model.model_dump_json(exclude={"attempts"}).encode()
        shaped: dict[str, Any] = {}
        for name, value in model.model_dump(mode="json").items():
            theirs = self.renames.get(name, "" if name in OPT_IN_FIELDS else name)
            if theirs:
                shaped[theirs] = value
        shaped.update(self.extra)
        return json.dumps(shaped, ensure_ascii=False, separators=(",", ":")).encode()


def fill_url(template: str, event: CallbackEvent) -> str:
    """``template`` with each known placeholder of its path and query replaced by the event's
    value, URL-encoded. Anything else (unknown braces, the host) is left as it is."""
    if "{" not in template:
        return template
    values = {
        "notification_id": event.notification_id,
        "request_id": event.request_id,
        "correlation_id": event.correlation_id,
        "status": event.status.value,
    }

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda found: quote(values[found.group(1)], safe=""), text)

    parts = urlsplit(template)
    return urlunsplit(parts._replace(path=fill(parts.path), query=fill(parts.query)))


def check_url_template(url: str) -> str:
    """``CALLBACK_URL`` as given, or ``ValueError``: it must be an http(s) URL with a host,
    and braces may only be the known placeholders, in the path or the query."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if "{" in parts.netloc or "}" in parts.netloc:
        raise ValueError("placeholders may only stand in the path or the query, not the host")
    for name in _ANY_PLACEHOLDER.findall(parts.path + parts.query):
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}}; known: {_braced(PLACEHOLDERS)}")
    rest = _PLACEHOLDER.sub("", parts.path + parts.query + parts.fragment)
    if "{" in rest or "}" in rest:
        raise ValueError(f"a brace that is not a placeholder; known: {_braced(PLACEHOLDERS)}")
    return url


def parse_field_names(text: str) -> dict[str, str]:
    """``CALLBACK_FIELD_NAMES``: comma-separated ``ours:theirs`` pairs (``ours:`` drops the
    field) as a mapping; ``ValueError`` for a pair without a colon. See ``check_renames``."""
    renames: dict[str, str] = {}
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        ours, colon, theirs = (piece.strip() for piece in pair.partition(":"))
        if not colon:
            raise ValueError(f"{pair!r} is not an ours:theirs pair (e.g. error:error_message)")
        if ours in renames:
            raise ValueError(f"{ours!r} is named twice")
        renames[ours] = theirs
    return check_renames(renames)


def check_renames(renames: Mapping[str, str]) -> dict[str, str]:
    """The renames, or ``ValueError`` naming an unknown field of ours, a name of theirs that
    is not a plain field name, or two fields that would be sent under one name."""
    known = FIELDS + OPT_IN_FIELDS
    for ours, theirs in renames.items():
        if ours not in known:
            raise ValueError(f"unknown field {ours!r}; the fields are {', '.join(known)}")
        if theirs and not _FIELD_NAME.fullmatch(theirs):
            raise ValueError(f"{theirs!r} (for {ours}) is not a plain field name")
    sent = sent_names(renames)
    clashes = sorted({name for name in sent if sent.count(name) > 1})
    if clashes:
        raise ValueError(f"two fields would be sent as {', '.join(clashes)}")
    return dict(renames)


def sent_names(renames: Mapping[str, str]) -> list[str]:
    """The body's field names after ``renames`` (extra fields aside)."""
    names = [renames.get(ours, ours) for ours in FIELDS]
    names += [renames.get(ours, "") for ours in OPT_IN_FIELDS]
    return [name for name in names if name]


def parse_extra_fields(text: str, renames: Mapping[str, str]) -> dict[str, Any]:
    """``CALLBACK_EXTRA_FIELDS``: a JSON object of at most 4 KiB whose keys are not sent
    already (after ``renames``), or ``ValueError``."""
    if not text.strip():
        return {}
    if len(text.encode("utf-8")) > MAX_EXTRA_BYTES:
        raise ValueError(f"longer than {MAX_EXTRA_BYTES} bytes")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError('not JSON; give an object like {"channel": "email"}') from None
    return check_extra_fields(value, renames)


def check_extra_fields(value: object, renames: Mapping[str, str]) -> dict[str, Any]:
    """``value`` if it is an object whose keys the body does not send already."""
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object like {"channel": "email"}')
    taken = sorted(set(value) & set(sent_names(renames)))
    if taken:
        raise ValueError(f"already in the body: {', '.join(taken)} (rename or drop it first)")
    return value


def _braced(names: tuple[str, ...]) -> str:
    return ", ".join(f"{{{name}}}" for name in names)
