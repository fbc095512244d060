"""The committed JSON Schema files match their models, and ``python -m schemas --check`` says
so (or names what is stale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import export
from schemas.__main__ import main

EXPECTED_FILES = {
    "inbound-message.schema.json",
    "email-request.schema.json",
    "status-callback.schema.json",
    "dead-letter-headers.schema.json",
}


def test_committed_schema_files_are_current() -> None:
    generated = export.generate()
    assert set(generated) == EXPECTED_FILES
    for name, text in generated.items():
        committed = (export.JSON_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run `python -m schemas`"
    assert export.stale() == []


def test_output_is_deterministic_and_sorted() -> None:
    first, second = export.generate(), export.generate()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        document = json.loads(text)
        assert document["$schema"] == export.DIALECT
        assert json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n" == text


def test_inbound_schema_documents_envelopes_and_aliases() -> None:
    document = json.loads(export.generate()["inbound-message.schema.json"])
    description = document["description"]
    for word in ('"pattern"', '"success"', "toEmail", "user.email", "variables.email", "requestId"):
        assert word in description
    assert document["required"] == ["request_id", "template_code"]
    assert document["properties"]["template_code"]["pattern"] == (
        "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
    )


def test_check_passes_after_generation_and_names_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1  # nothing generated yet
    assert "inbound-message.schema.json" in capsys.readouterr().err

    assert main(["--dir", str(tmp_path)]) == 0
    assert {path.name for path in tmp_path.iterdir()} == EXPECTED_FILES
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    capsys.readouterr()

    callback = tmp_path / "status-callback.schema.json"
    callback.write_text(callback.read_text(encoding="utf-8").replace("delivered", "sent"))
    (tmp_path / "obsolete.schema.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "status-callback.schema.json" in err
    assert "obsolete.schema.json" in err
    assert "inbound-message.schema.json" not in err


def test_generation_rewrites_only_stale_files(tmp_path: Path) -> None:
    assert len(export.write(tmp_path)) == len(EXPECTED_FILES)
    assert export.write(tmp_path) == []
    (tmp_path / "email-request.schema.json").write_text("{}\n")
    assert [path.name for path in export.write(tmp_path)] == ["email-request.schema.json"]
    assert export.stale(tmp_path) == []
