"""Fitting a gateway's status endpoint: URL placeholders, renamed and dropped body fields, extra
fields, and the start-up checks of CALLBACK_URL, CALLBACK_FIELD_NAMES, CALLBACK_EXTRA_FIELDS."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from email_worker.callbacks.shape import (
    CallbackEvent,
    CallbackShape,
    check_url_template,
    fill_url,
    parse_extra_fields,
    parse_field_names,
)
from email_worker.cli import load_settings
from email_worker.config import Settings
from schemas.callback import CallbackStatus

EVENT = CallbackEvent(
    notification_id="n-1",
    request_id="r-1",
    correlation_id="c-1",
    status=CallbackStatus.FAILED,
    timestamp="2026-11-23T10:00:00Z",
    error="invalid_message: template_code: missing",
    attempts=2,
)


def test_default_body_is_the_contract_body_and_leaves_attempts_out() -> None:
    body = json.loads(CallbackShape().body(EVENT))
    assert body == {
        "notification_id": "n-1",
        "status": "failed",
        "timestamp": "2026-11-23T10:00:00Z",
        "error": "invalid_message: template_code: missing",
        "request_id": "r-1",
        "correlation_id": "c-1",
    }


def test_renames_drops_opt_in_and_extra_fields() -> None:
    renames = parse_field_names(
        "notification_id:notificationId, error:error_message,timestamp:delivered_at,"
        "request_id:,correlation_id:,attempts:retries"
    )
    shape = CallbackShape(renames, parse_extra_fields('{"channel": "email"}', renames))
    assert json.loads(shape.body(EVENT)) == {
        "notificationId": "n-1",
        "status": "failed",
        "delivered_at": "2026-11-23T10:00:00Z",
        "error_message": "invalid_message: template_code: missing",
        "retries": 2,
        "channel": "email",
    }


def test_placeholders_are_url_encoded_in_path_and_query_only() -> None:
    event = CallbackEvent(
        notification_id="a/b?c&d=#e@f",
        request_id="r 1",
        correlation_id="é",
        status=CallbackStatus.PENDING,
        timestamp="t",
        error=None,
        attempts=None,
    )
    template = "https://gw.test/n/{request_id}/status/?notification_id={notification_id}&s={status}"
    url = fill_url(check_url_template(template), event)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "gw.test", "/n/r%201/status/")
    assert parse_qs(parts.query) == {"notification_id": ["a/b?c&d=#e@f"], "s": ["pending"]}
    assert fill_url("http://gw.test/status/", event) == "http://gw.test/status/"  # no template


@given(st.text(min_size=1, max_size=128))
def test_a_filled_value_never_changes_the_host_or_adds_a_query_key(value: str) -> None:
    event = CallbackEvent(value, value, value, CallbackStatus.DELIVERED, "t", None, None)
    url = fill_url("http://gw.test:8000/s/{request_id}?id={notification_id}", event)
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.fragment) == ("gw.test", 8000, "")
    assert parts.path.count("/") == 2
    assert parse_qs(parts.query, keep_blank_values=True) == {"id": [value]}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://{notification_id}.gw.test/s", "not the host"),
        ("http://gw.test/s?id={user_id}", "unknown placeholder {user_id}"),
        ("http://gw.test/s?id={notification_id", "a brace"),
        ("ftp://gw.test/s", "http://"),
        ("http:///s", "with a host"),
        ("http://gw.test:99999/s", "not a URL"),
    ],
)
def test_bad_callback_urls_stop_start_up(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(callback_url=url)
    (error,) = refused.value.errors()
    assert error["loc"] == ("callback_url",) and problem in error["msg"]


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ("user_email:email", "unknown field 'user_email'"),
        ("status", "not an ours:theirs pair"),
        ("error:a,error:b", "named twice"),
        ("error:status", "two fields would be sent as status"),
        ("error:bad name", "not a plain field name"),
    ],
)
def test_bad_field_names_stop_start_up_naming_the_variable(names: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(callback_field_names=names)
    (error,) = refused.value.errors()
    assert error["loc"] == ("callback_field_names",) and problem in error["msg"]


@pytest.mark.parametrize(
    ("names", "extra", "problem"),
    [
        ("", "[1]", "must be a JSON object"),
        ("", "{channel: email}", "not JSON"),
        ("", '{"status": "x"}', "already in the body: status"),
        ("error:error_message", '{"error_message": 1}', "already in the body"),
        ("", '{"a": "' + "x" * 5000 + '"}', "longer than"),
    ],
)
def test_bad_extra_fields_stop_start_up(names: str, extra: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(callback_field_names=names, callback_extra_fields=extra)
    (error,) = refused.value.errors()
    assert error["loc"] == ("callback_extra_fields",) and problem in error["msg"]


def test_a_dropped_field_may_be_replaced_by_an_extra_one() -> None:
    settings = Settings(
        callback_field_names="request_id:", callback_extra_fields='{"request_id": 0}'
    )
    assert json.loads(settings.callback_shape().body(EVENT))["request_id"] == 0


def test_settings_read_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EMAIL_WORKER_CALLBACK_URL", "http://gw.test/s?notification_id={notification_id}"
    )
    monkeypatch.setenv("EMAIL_WORKER_CALLBACK_FIELD_NAMES", "notification_id:notificationId")
    monkeypatch.setenv("EMAIL_WORKER_CALLBACK_EXTRA_FIELDS", '{"channel": "email"}')
    shape = Settings().callback_shape()
    assert shape == CallbackShape({"notification_id": "notificationId"}, {"channel": "email"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMAIL_WORKER_CALLBACK_FIELD_NAMES", "user_email:email"),
        ("EMAIL_WORKER_CALLBACK_EXTRA_FIELDS", "channel=email"),
        ("EMAIL_WORKER_CALLBACK_URL", "http://gw.test/s?id={user_id}"),
    ],
)
def test_the_command_line_stops_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    assert stopped.value.code == 2
    assert f"configuration error: {variable}: " in capsys.readouterr().err
