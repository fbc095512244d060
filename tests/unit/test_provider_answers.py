"""The HTTP API providers' answers classified like SMTP replies (CONTRACT section 16): the
table of ``email_worker.providers.answers``, each provider's error codes, ``Retry-After``,
and the failures of a broken exchange (before the request left: fail over; after: ambiguous)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from email_worker.providers.answers import (
    MAX_RETRY_AFTER,
    CodeKind,
    Refusal,
    failure,
    provider_id,
    reset_after,
    retry_after,
)
from email_worker.providers.exchange import Answer, exchange_failure
from email_worker.providers.postmark import KINDS as POSTMARK_KINDS
from email_worker.providers.sendgrid import error_field
from email_worker.providers.ses import KINDS as SES_KINDS
from email_worker.providers.ses import error_type
from email_worker.relays.failover import fails_over
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    TransientFailure,
    WorkerFailure,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "kind", "expected", "reason", "over"),
    [
        (429, None, ThrottledFailure, Reason.THROTTLED, False),
        (400, CodeKind.THROTTLE, ThrottledFailure, Reason.THROTTLED, False),
        (401, None, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (403, None, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (404, None, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (301, None, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (308, None, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (400, CodeKind.ACCOUNT, SystemicFailure, Reason.SMTP_AUTH_FAILED, True),
        (408, None, RelayUnavailable, Reason.SMTP_UNAVAILABLE, True),
        (500, None, RelayUnavailable, Reason.SMTP_UNAVAILABLE, True),
        (503, None, RelayUnavailable, Reason.SMTP_UNAVAILABLE, True),
        (422, CodeKind.UNAVAILABLE, RelayUnavailable, Reason.SMTP_UNAVAILABLE, True),
        (400, None, PermanentFailure, Reason.MESSAGE_REJECTED, False),
        (413, None, PermanentFailure, Reason.MESSAGE_REJECTED, False),
        (422, CodeKind.MESSAGE, PermanentFailure, Reason.MESSAGE_REJECTED, False),
        (422, CodeKind.RECIPIENT, PermanentFailure, Reason.RECIPIENT_REJECTED, False),
        (303, None, AmbiguousDelivery, Reason.SMTP_UNKNOWN, False),
        (100, None, AmbiguousDelivery, Reason.SMTP_UNKNOWN, False),
    ],
)
def test_the_classification_table(
    status: int, kind: CodeKind | None, expected: type, reason: Reason, over: bool
) -> None:
    found = failure(Refusal("prov", status, "Code1", kind))
    assert type(found) is expected
    assert found.reason is reason
    assert found.detail == f"{status} prov Code1"
    assert fails_over(found) is over


def test_a_throttle_carries_the_advised_pause_and_slows_the_relay() -> None:
    found = failure(Refusal("sendgrid", 429, retry_after=12.0))
    assert isinstance(found, ThrottledFailure)
    assert (found.route, found.retry_after) == ("relay", 12.0)


@pytest.mark.parametrize(
    "code", ["ann@example.com", "rejected ann@example.com", "x" * 65, "a b", "", None]
)
def test_a_detail_never_carries_a_code_that_could_be_text(code: str | None) -> None:
    assert failure(Refusal("mailgun", 400, code)).detail == "400 mailgun"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("MessageRejected", CodeKind.MESSAGE),
        ("TooManyRequestsException", CodeKind.THROTTLE),
        ("LimitExceededException", CodeKind.THROTTLE),
        ("SendingPausedException", CodeKind.ACCOUNT),
        ("AccountSuspendedException", CodeKind.ACCOUNT),
        ("MailFromDomainNotVerifiedException", CodeKind.ACCOUNT),
        ("NotFoundException", CodeKind.ACCOUNT),
        ("InvalidSignatureException", CodeKind.ACCOUNT),
    ],
)
def test_ses_error_types_mean_what_the_service_model_says(error: str, kind: CodeKind) -> None:
    assert SES_KINDS[error] is kind


def _answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, httpx.Headers(headers or {}), body)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            _answer(
                400, headers={"x-amzn-ErrorType": "MessageRejected:http://internal.amazon.com/x"}
            ),
            "MessageRejected",
        ),
        (_answer(400, b'{"code": "BadRequestException", "message": "m"}'), "BadRequestException"),
        (
            _answer(400, b'{"__type": "com.amazon.coral#ThrottlingException"}'),
            "ThrottlingException",
        ),
        (_answer(400, b"<html>not json</html>"), None),
        (_answer(400, b'["a list"]'), None),
    ],
)
def test_ses_error_types_are_read_as_botocore_reads_them(
    answer: Answer, expected: str | None
) -> None:
    assert error_type(answer) == expected


def test_sendgrid_names_the_field_and_personalizations_mean_the_recipient() -> None:
    body = b'{"errors": [{"field": null, "message": "x"}, {"field": "personalizations.0.to"}]}'
    assert error_field(_answer(400, body)) == "personalizations.0.to"
    assert error_field(_answer(400, b'{"errors": "nope"}')) is None


def test_postmark_codes_from_its_table() -> None:
    assert POSTMARK_KINDS[406] is CodeKind.RECIPIENT
    assert POSTMARK_KINDS[10] is CodeKind.ACCOUNT
    assert POSTMARK_KINDS[100] is CodeKind.UNAVAILABLE
    assert 300 not in POSTMARK_KINDS  # an invalid request: the message, by its 422


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("999999", MAX_RETRY_AFTER),
        (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
        (format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True), 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_or_a_date(value: str | None, expected: float | None) -> None:
    assert retry_after(value, NOW) == expected


def test_a_rate_limit_reset_is_a_unix_time() -> None:
    assert reset_after(str(int(NOW) + 42), NOW) == 42.0
    assert reset_after(str(int(NOW) - 42), NOW) == 0.0
    assert reset_after("1.5", NOW) is None


@given(st.text(max_size=300))
def test_retry_after_never_raises_and_stays_within_bounds(value: str) -> None:
    for read in (retry_after(value, NOW), reset_after(value, NOW)):
        assert read is None or 0.0 <= read <= MAX_RETRY_AFTER


@given(st.binary(max_size=300), st.text(max_size=80))
def test_error_codes_never_raise_and_details_never_carry_an_address(
    body: bytes, header: str
) -> None:
    answer = _answer(400, body, {"x-amzn-ErrorType": header} if header.isascii() else None)
    for code in (error_type(answer), error_field(answer)):
        detail = failure(Refusal("p", 400, code)).detail
        assert "@" not in detail and len(detail) <= 80


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc.123", "abc.123"),
        ("<x@mg.example.com>", "<x@mg.example.com>"),
        ("a b", None),
        ("", None),
        (42, None),
        ("x" * 201, None),
    ],
)
def test_provider_ids_are_kept_only_when_they_look_like_ids(
    value: object, expected: str | None
) -> None:
    assert provider_id(value) == expected


def _connect_error_from_certificate() -> httpx.ConnectError:
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as inner:
            raise httpx.ConnectError("handshake") from inner
    except httpx.ConnectError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "expected", "over"),
    [
        (httpx.PoolTimeout("pool"), DeferredFailure, False),
        (httpx.ConnectError("refused"), RelayUnavailable, True),
        (httpx.ConnectTimeout("slow"), RelayUnavailable, True),
        (_connect_error_from_certificate(), SystemicFailure, True),
        (httpx.WriteError("reset"), RelayUnavailable, True),
        (httpx.WriteTimeout("slow"), RelayUnavailable, True),
        (httpx.ReadTimeout("slow"), AmbiguousDelivery, False),
        (httpx.ReadError("reset"), AmbiguousDelivery, False),
        (httpx.RemoteProtocolError("closed"), AmbiguousDelivery, False),
        (httpx.LocalProtocolError("ours"), TransientFailure, False),
    ],
)
def test_a_broken_exchange_fails_over_only_before_the_request_left(
    error: httpx.HTTPError, expected: type[WorkerFailure], over: bool
) -> None:
    found = exchange_failure(error)
    assert type(found) is expected
    assert fails_over(found) is over
