"""The published JSON Schema documents of the wire contracts (``schemas/json``).

The files are generated from the pydantic models, never edited by hand: ``python -m schemas``
writes them and ``python -m schemas --check`` (CI, and ``tests/unit/test_schema_files.py``) fails
when a committed file no longer matches its model. Output is deterministic (sorted keys, indent
2, trailing newline) so a diff shows only real contract changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.callback import StatusCallback
from schemas.deadletter import DeadLetterHeaders
from schemas.inbound import InboundMessage
from schemas.request import EmailRequest

JSON_DIR = Path(__file__).resolve().parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
Mode = Literal["validation", "serialization"]

# What the worker reads is described as accepted (validation); what it writes, as produced.
DOCUMENTS: dict[str, tuple[type[BaseModel], Mode]] = {
    "inbound-message.schema.json": (InboundMessage, "validation"),
    "email-request.schema.json": (EmailRequest, "serialization"),
    "status-callback.schema.json": (StatusCallback, "serialization"),
    "dead-letter-headers.schema.json": (DeadLetterHeaders, "serialization"),
}


def schema_for(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``model`` as published."""
    return {"$schema": DIALECT, **model.model_json_schema(mode=mode)}


def render(schema: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, indent 2, UTF-8 characters kept, trailing newline."""
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> expected content, for every published document."""
    return {name: render(schema_for(model, mode)) for name, (model, mode) in DOCUMENTS.items()}


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Write every document into ``directory`` (created if needed); return the paths written.
    Files whose content is already current are left untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Names of files in ``directory`` that are missing, differ from their model, or are
    ``*.schema.json`` files no model produces any more. Empty when everything is current."""
    expected = generate()
    found: list[str] = []
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            found.append(name)
    if directory.is_dir():
        found += [p.name for p in directory.glob("*.schema.json") if p.name not in expected]
    return sorted(found)
