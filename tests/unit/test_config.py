"""Settings: the only reader of the environment; bad values stop start-up naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from email_worker.config import Settings


def test_lists_and_delays_come_from_comma_separated_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_WORKER_RETRY_DELAYS", "1, 2.5,30")
    monkeypatch.setenv("EMAIL_WORKER_ROUTING_KEYS", "email, email.queue")
    settings = Settings()
    assert settings.retry_delays == [1.0, 2.5, 30.0]
    assert settings.routing_keys == ["email", "email.queue"]
    assert settings.retry_queue_name(2.5) == "email.retry.2500ms"


def test_secrets_may_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "smtp"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("EMAIL_WORKER_SMTP_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EMAIL_WORKER_SMTP_PORT", "not-a-port"),
        ("EMAIL_WORKER_RETRY_DELAYS", "5,-1"),
        ("EMAIL_WORKER_FROM_ADDRESS", "Acme <noreply@example.com>, Bob <bob@example.com>"),
        ("EMAIL_WORKER_FROM_ADDRESS", "noreply@exämple.com"),
        ("EMAIL_WORKER_SMTP_SECURITY", "ssl"),
        ("EMAIL_WORKER_QUEUE_TYPE", "stream"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    field = name.removeprefix("EMAIL_WORKER_").lower()
    assert field in {str(error["loc"][0]) for error in refused.value.errors()}


def test_db_prepared_statements_is_accepted_ignored_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().deprecations() == []
    monkeypatch.setenv("EMAIL_WORKER_DB_PREPARED_STATEMENTS", "false")
    (message,) = Settings().deprecations()
    assert "EMAIL_WORKER_DB_PREPARED_STATEMENTS is deprecated and ignored" in message


def test_the_deprecation_is_logged_at_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from email_worker import cli

    monkeypatch.setenv("EMAIL_WORKER_DB_PREPARED_STATEMENTS", "true")
    monkeypatch.setattr(cli, "_dispatch", lambda args, settings: 0)
    monkeypatch.setattr("email_worker.logs.configure", lambda level, **_: None)
    with caplog.at_level("WARNING", logger="email_worker.cli"):
        assert cli.main(["migrate"]) == 0
    assert any("DB_PREPARED_STATEMENTS" in r.getMessage() for r in caplog.records)
