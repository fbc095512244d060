"""The template and user service settings (CONTRACT sections 5, 6 and 10): read from the
environment, secrets from files, and a typo stops start-up with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from email_worker import cli
from email_worker.config import Settings


def test_defaults_are_the_contract_paths() -> None:
    settings = Settings()
    assert settings.template_path == "/api/v1/templates/{template_code}"
    assert settings.user_service_path == "/api/v1/users/{user_id}"
    assert settings.user_service_auth_header == "Authorization"
    assert settings.template_field_paths() == {} and settings.user_field_paths() == {}


def test_settings_come_from_the_environment_and_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text("t0k\n", encoding="utf-8")
    monkeypatch.setenv("EMAIL_WORKER_TEMPLATE_SERVICE_TOKEN_FILE", str(secret))
    monkeypatch.setenv("EMAIL_WORKER_TEMPLATE_PATH", "/t/{language}/{template_code}")
    monkeypatch.setenv("EMAIL_WORKER_TEMPLATE_FIELDS", "subject=data.name,html=data.content")
    monkeypatch.setenv("EMAIL_WORKER_USER_FIELDS", "email=data.contact.email")
    monkeypatch.setenv("EMAIL_WORKER_USER_SERVICE_AUTH_HEADER", "X-Api-Key")
    settings = Settings()
    assert settings.template_service_token is not None
    assert settings.template_service_token.get_secret_value() == "t0k"
    assert settings.template_field_paths() == {
        "subject": ("data", "name"),
        "html": ("data", "content"),
    }
    assert settings.user_field_paths() == {"email": ("data", "contact", "email")}
    assert settings.user_service_auth_header == "X-Api-Key"
    assert "t0k" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("EMAIL_WORKER_TEMPLATE_FIELDS", "subjet=data.name", "unknown field 'subjet'"),
        ("EMAIL_WORKER_TEMPLATE_FIELDS", "subject=data..name", "dot-separated keys"),
        ("EMAIL_WORKER_USER_FIELDS", "mail=data.email", "unknown field 'mail'"),
        ("EMAIL_WORKER_TEMPLATE_PATH", "/templates/{code}", "unknown placeholder {code}"),
        ("EMAIL_WORKER_USER_SERVICE_PATH", "/users/", "must use the placeholder {user_id}"),
        ("EMAIL_WORKER_USER_SERVICE_AUTH_HEADER", "X Api Key", "should match pattern"),
        ("EMAIL_WORKER_TEMPLATE_DEFAULT_LANGUAGE", "english please", "should match pattern"),
    ],
)
def test_a_typo_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    complaint: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run"])
    assert stopped.value.code == cli.EXIT_CONFIG
    error = capsys.readouterr().err
    assert f"configuration error: {variable}: " in error
    assert complaint in error
