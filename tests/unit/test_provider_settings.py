"""The HTTP API providers' settings (CONTRACT section 16): a ``RELAYS`` entry whose credentials
are unset stops start-up naming the setting; credentials are secrets (``*_FILE`` too); an API
URL override is checked without echoing it; and what the JSON providers are sent is the same
message, every header checked as for SMTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from email_worker.config import Settings
from email_worker.ports import Mailbox, OutgoingEmail, RenderedEmail
from email_worker.providers.postmark import email_body
from email_worker.providers.sendgrid import mail_send_body
from schemas.failures import PermanentFailure, Reason

CONTENT = RenderedEmail(
    subject="Welcome, Ada",
    html="<p>Hi Ada</p>",
    text="Hi Ada",
    template_code="welcome",
    template_version="1",
    list_unsubscribe="<https://mail.acme.test/u/tok>",
    list_unsubscribe_post="List-Unsubscribe=One-Click",
)
EMAIL = OutgoingEmail(
    "noreply@acme.test",
    "ann@example.test",
    "<abc@acme.test>",
    CONTENT,
    sender_name="Acme, Inc.",
    reply_to=Mailbox("help@acme.test", "Help"),
)


def _error(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return "\n".join(f"{e['loc']} {e['msg']}" for e in caught.value.errors())


@pytest.mark.parametrize(
    ("relays", "missing"),
    [
        ("ses://eu-west-1", "ses_access_key_id"),
        ("ses://eu-west-1", "ses_secret_access_key"),
        ("smtp://a:25,sendgrid://", "sendgrid_api_key"),
        ("mailgun://mg.acme.test", "mailgun_api_key"),
        ("postmark://", "postmark_server_token"),
    ],
)
def test_a_relay_without_its_credentials_stops_start_up_naming_the_setting(
    relays: str, missing: str
) -> None:
    error = _error(relays=relays)
    assert f"('{missing}',)" in error and "RELAYS" in error


def test_the_sandbox_and_smtp_relays_need_no_provider_credentials() -> None:
    Settings(relays=SecretStr("postmark://"), sandbox=True)
    Settings(relays=SecretStr("smtp://a:25"))


def test_provider_credentials_are_secrets_and_may_come_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "key"
    key.write_text("SG.secret-from-file\n", encoding="utf-8")
    monkeypatch.setenv("EMAIL_WORKER_RELAYS", "sendgrid://")
    monkeypatch.setenv("EMAIL_WORKER_SENDGRID_API_KEY_FILE", str(key))
    settings = Settings()
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.secret-from-file"
    assert "secret-from-file" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://api.sendgrid.example", "must be https://"),
        ("https://user:pw@api.sendgrid.example", "may not hold a user or password"),
        ("https://api.sendgrid.example/?k=v", "may not hold a query"),
        ("ftp://api.sendgrid.example", "must be an https:// URL"),
        ("https://api.example:99999", "not a valid URL"),
    ],
)
def test_an_api_url_is_checked_without_echoing_it(url: str, says: str) -> None:
    error = _error(sendgrid_api_url=url)
    assert says in error and url not in error


def test_an_api_url_may_be_https_anywhere_or_http_to_loopback() -> None:
    settings = Settings(
        sendgrid_api_url="https://api.eu.sendgrid.com/",
        mailgun_api_url="http://127.0.0.1:8025",
        postmark_api_url="http://localhost:9/prefix",
    )
    assert settings.sendgrid_api_url == "https://api.eu.sendgrid.com"
    assert settings.postmark_api_url == "http://localhost:9/prefix"


def test_sendgrid_gets_the_same_subject_parts_and_headers() -> None:
    body = mail_send_body(EMAIL)
    assert body["personalizations"] == [{"to": [{"email": "ann@example.test"}]}]
    assert body["from"] == {"email": "noreply@acme.test", "name": "Acme, Inc."}
    assert body["reply_to"] == {"email": "help@acme.test", "name": "Help"}
    assert body["subject"] == "Welcome, Ada"
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi Ada"},
        {"type": "text/html", "value": "<p>Hi Ada</p>"},
    ]
    assert body["headers"] == {
        "Message-ID": "<abc@acme.test>",
        "List-Unsubscribe": "<https://mail.acme.test/u/tok>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_postmark_gets_the_same_subject_parts_and_headers() -> None:
    body = email_body(EMAIL, "outbound")
    assert body["From"] == '"Acme, Inc." <noreply@acme.test>'
    assert (body["To"], body["ReplyTo"]) == ("ann@example.test", "Help <help@acme.test>")
    assert (body["TextBody"], body["HtmlBody"]) == ("Hi Ada", "<p>Hi Ada</p>")
    assert body["Headers"][0] == {"Name": "Message-ID", "Value": "<abc@acme.test>"}
    assert [h["Name"] for h in body["Headers"]][1:] == ["List-Unsubscribe", "List-Unsubscribe-Post"]
    assert body["MessageStream"] == "outbound"


@pytest.mark.parametrize("build", [mail_send_body, lambda e: email_body(e, "outbound")])
def test_an_unsafe_header_never_reaches_a_json_provider(build: Any) -> None:
    unsafe = OutgoingEmail(
        EMAIL.sender,
        EMAIL.recipient,
        EMAIL.message_id,
        RenderedEmail("Hi\r\nBcc: x@evil.test", "<p>x</p>", "x", "welcome", "1"),
    )
    with pytest.raises(PermanentFailure) as caught:
        build(unsafe)
    assert caught.value.reason is Reason.UNSAFE_CONTENT
