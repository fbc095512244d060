"""The AsyncAPI document is generated from the models, committed fresh, self-consistent, and
``python -m schemas --check`` names it when it is stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from email_worker.config import Settings
from schemas import asyncapi, export
from schemas.__main__ import main
from schemas.callback import StatusCallback
from schemas.deadletter import DeadLetterHeaders
from schemas.failures import Reason
from schemas.inbound import InboundMessage


def _document() -> dict[str, Any]:
    return json.loads(asyncapi.ASYNCAPI_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved {ref}"
        node = node[part]
    return node


def test_committed_document_is_current_and_deterministic() -> None:
    assert asyncapi.render() == asyncapi.render()
    assert asyncapi.ASYNCAPI_PATH.read_text(encoding="utf-8") == asyncapi.render(), (
        "schemas/asyncapi.json is stale: run `python -m schemas`"
    )
    assert not asyncapi.is_stale()


def test_document_is_asyncapi_3_and_every_reference_resolves() -> None:
    document = _document()
    assert document["asyncapi"] == "3.0.0"
    refs = _refs(document)
    assert len(refs) > 15
    for ref in refs:
        _resolve(document, ref)
    # No reference escapes into pydantic's private $defs layout.
    assert not [ref for ref in refs if "$defs" in ref]
    assert "$defs" not in json.dumps(document["components"]["schemas"])


@pytest.mark.parametrize(
    ("name", "model", "mode"),
    [
        ("InboundMessage", InboundMessage, "validation"),
        ("DeadLetterHeaders", DeadLetterHeaders, "serialization"),
        ("StatusCallback", StatusCallback, "serialization"),
    ],
)
def test_payload_schemas_are_the_published_json_schemas(
    name: str, model: type[Any], mode: export.Mode
) -> None:
    published = json.dumps(export.schema_for(model, mode), sort_keys=True)
    published_doc = json.loads(published.replace("#/$defs/", "#/components/schemas/"))
    component = _document()["components"]["schemas"][name]
    for key in ("properties", "required", "type", "description"):
        assert component.get(key) == published_doc.get(key), key


def test_channels_match_the_worker_defaults() -> None:
    fields = Settings.model_fields
    channels = _document()["channels"]
    assert channels["emailQueue"]["address"] == fields["email_queue"].default
    assert channels["failedQueue"]["address"] == fields["failed_queue"].default
    assert channels["notificationsExchange"]["address"] == fields["exchange"].default
    assert list(asyncapi.ROUTING_KEYS) == fields["routing_keys"].default
    for key in asyncapi.ROUTING_KEYS:
        assert f"'{key}'" in channels["emailQueue"]["description"]
    assert channels["statusCallback"]["address"] == "/api/v1/email/status/"


def test_messages_operations_and_headers() -> None:
    document = _document()
    operations = document["operations"]
    assert {op["action"] for op in operations.values()} == {"send", "receive"}
    assert operations["consumeEmail"]["channel"] == {"$ref": "#/channels/emailQueue"}
    assert operations["sendStatusCallback"]["bindings"]["http"]["method"] == "POST"
    messages = document["components"]["messages"]
    assert messages["inboundMessage"]["payload"] == {"$ref": "#/components/schemas/InboundMessage"}
    dead_letter_headers = messages["deadLetterRecord"]["headers"]["allOf"]
    assert {"$ref": "#/components/schemas/DeadLetterHeaders"} in dead_letter_headers
    webhook = document["components"]["schemas"]["WebhookHeaders"]
    assert set(webhook["properties"]) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    reasons = document["components"]["schemas"]["FailureReason"]["enum"]
    assert set(reasons) == {reason.value for reason in Reason}


def test_examples_are_valid_for_their_models() -> None:
    messages = _document()["components"]["messages"]
    for example in messages["inboundMessage"]["examples"]:
        InboundMessage.model_validate(example["payload"])
    for example in messages["statusCallback"]["examples"]:
        StatusCallback.model_validate(example["payload"])


def test_check_names_a_stale_asyncapi_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "asyncapi.json"
    json_dir = tmp_path / "json"
    assert main(["--dir", str(json_dir), "--asyncapi", str(document)]) == 0
    assert document.read_text(encoding="utf-8") == asyncapi.render()
    assert main(["--check", "--dir", str(json_dir), "--asyncapi", str(document)]) == 0
    capsys.readouterr()

    document.write_text(document.read_text(encoding="utf-8").replace("failed.queue", "dlq"))
    assert main(["--check", "--dir", str(json_dir), "--asyncapi", str(document)]) == 1
    err = capsys.readouterr().err
    assert str(document) in err
    assert "schema.json" not in err
    assert asyncapi.write(document) is True
    assert asyncapi.write(document) is False
