"""Reading named fields out of a service's JSON answer (CONTRACT sections 5 and 6): the gateway
envelope, the default places of each field, and the operator's dotted paths that replace them
(``TEMPLATE_FIELDS``, ``USER_FIELDS``). One reader serves the template and the user service.

A setting is comma-separated ``name=path`` pairs: ``subject=data.name,html=data.content``. A
path is dot-separated keys read from the answer's root (before any envelope is peeled); a key
made of digits also indexes a list (``data.items.0.subject``). A field the setting names is read
from its path only; every other field keeps its default places, read from the payload (the
``data`` of a gateway envelope, or the bare object).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

Path = tuple[str, ...]

# Keys a gateway puts around its payload; a dict made only of these and a dict "data" is an
# envelope, anything else is the bare object.
ENVELOPE_KEYS = frozenset({"success", "data", "message", "error", "meta", "status", "statusCode"})
_FORBIDDEN_IN_KEYS = frozenset(" \t\r\n=,")


def parse_field_paths(text: str, known: Collection[str]) -> dict[str, Path]:
    """``name=path,...`` as {name: path}. An empty text means "defaults only".

    Raises ``ValueError`` naming the offending pair: an unknown name (the known ones are
    listed), a name given twice, or a path with an empty key or whitespace."""
    paths: dict[str, Path] = {}
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        name, equals, raw_path = (piece.strip() for piece in pair.partition("="))
        if not equals or not name:
            raise ValueError(f"{pair!r} is not name=path (e.g. subject=data.name)")
        if name not in known:
            raise ValueError(f"unknown field {name!r}; known fields: {', '.join(known)}")
        if name in paths:
            raise ValueError(f"field {name!r} is given twice")
        keys = tuple(raw_path.split("."))
        if any(not key or _FORBIDDEN_IN_KEYS.intersection(key) for key in keys):
            raise ValueError(f"{pair!r}: the path needs dot-separated keys, like data.name")
        paths[name] = keys
    return paths


def format_path(path: Path) -> str:
    return ".".join(path)


def resolve(node: object, path: Path) -> object:
    """The value at ``path`` under ``node``, or None when any step is missing."""
    for key in path:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def unwrap_envelope(obj: object) -> dict[str, Any]:
    """The payload object: ``data`` of a gateway envelope (``{"success": true, "data": {...}}``)
    or the bare object itself. Raises ``ValueError`` for a non-object or an envelope that
    reports ``"success": false``."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {_json_kind(obj)}")
    if obj.get("success") is False:
        raise ValueError("envelope reports success=false")
    data = obj.get("data")
    if isinstance(data, dict) and obj.keys() <= ENVELOPE_KEYS:
        return data
    return obj


def _json_kind(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


class FieldReader:
    """Where each field of one service's answer is read: ``defaults`` (paths in the payload,
    in order of preference) unless ``overrides`` (paths from the root) names the field."""

    def __init__(
        self, defaults: Mapping[str, tuple[Path, ...]], overrides: Mapping[str, Path]
    ) -> None:
        unknown = set(overrides) - set(defaults)
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        self._defaults = dict(defaults)
        self._overrides = dict(overrides)

    def places(self, name: str) -> str:
        """Where ``name`` is looked for, for a failure detail (``subject or title``)."""
        if name in self._overrides:
            return format_path(self._overrides[name])
        return " or ".join(format_path(path) for path in self._defaults[name])

    def candidates(self, answer: object, name: str) -> list[object]:
        """The values found for ``name``, in order of preference (absent places left out).
        Raises ``ValueError`` when the field is read from the payload and ``answer`` is not an
        object or an envelope reporting failure."""
        if name in self._overrides:
            value = resolve(answer, self._overrides[name])
            return [] if value is None else [value]
        payload = unwrap_envelope(answer)
        found = (resolve(payload, path) for path in self._defaults[name])
        return [value for value in found if value is not None]
