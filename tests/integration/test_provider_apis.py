"""Each HTTP API provider's transport against a fake of its API (real HTTP servers of the tests'
own, built from the providers' docs, checking authentication and request shape strictly): the
fake accepts our requests as the real API would; the SigV4 signature is verified, so a wrong
key or a tampered body is refused; answers and broken exchanges are classified (CONTRACT 16)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from email_worker.dkim import DkimSigner
from email_worker.ports import Accepted, Mailbox, OutgoingEmail, RenderedEmail
from email_worker.providers.exchange import ProviderHttp
from email_worker.providers.mailgun import MailgunTransport
from email_worker.providers.postmark import PostmarkTransport
from email_worker.providers.sendgrid import SendGridTransport
from email_worker.providers.ses import SesTransport
from schemas.failures import (
    AmbiguousDelivery,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    WorkerFailure,
)
from tests.support.dkim import DOMAIN, SELECTOR, Verifier, new_key
from tests.support.http import Reply
from tests.support.providers import (
    MailgunFake,
    PostmarkFake,
    ProviderFake,
    SendGridFake,
    SesFake,
)
from tests.support.refusing import closed_port

pytestmark = pytest.mark.integration

REGION, KEY_ID, SECRET = "eu-west-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
MG_DOMAIN = "mg.acme.test"
CONTENT = RenderedEmail(
    subject="Welcome, Ada",
    html="<p>Hi Ada, <a href='https://acme.test/x'>here</a></p>",
    text="Hi Ada, here: https://acme.test/x",
    template_code="welcome",
    template_version="3",
    list_unsubscribe="<https://mail.acme.test/u/tok>",
    list_unsubscribe_post="List-Unsubscribe=One-Click",
)
EMAIL = OutgoingEmail(
    f"noreply@{DOMAIN}",
    "ann@example.test",
    f"<m1.abc@{DOMAIN}>",
    CONTENT,
    sender_name="Acme",
    reply_to=Mailbox(f"help@{DOMAIN}"),
)


def http(url: str, timeout: float = 5.0) -> ProviderHttp:
    return ProviderHttp(url, timeout=timeout, max_connections=2)


def ses(timeout: float = 5.0, sign: Any = None, secret: str = SECRET) -> tuple[SesFake, Any]:
    fake = SesFake(REGION, KEY_ID, SECRET)
    return fake, SesTransport(REGION, KEY_ID, secret, http(fake.url, timeout), sign=sign)


def sendgrid(timeout: float = 5.0, key: str = "SG.key") -> tuple[SendGridFake, Any]:
    fake = SendGridFake("SG.key")
    return fake, SendGridTransport(key, http(fake.url, timeout))


def mailgun(timeout: float = 5.0, sign: Any = None, key: str = "mg-key") -> tuple[Any, Any]:
    fake = MailgunFake(MG_DOMAIN, "mg-key")
    return fake, MailgunTransport(MG_DOMAIN, key, http(fake.url, timeout), sign=sign)


def postmark(timeout: float = 5.0, token: str = "pm-token") -> tuple[PostmarkFake, Any]:
    fake = PostmarkFake("pm-token")
    return fake, PostmarkTransport(token, http(fake.url, timeout), stream="outbound")


@pytest.fixture
def started() -> Iterator[list[tuple[ProviderFake, Any]]]:
    pairs: list[tuple[ProviderFake, Any]] = []
    yield pairs
    for fake, transport in pairs:
        transport.close()
        fake.stop()


def pair(started: list[Any], made: tuple[Any, Any]) -> tuple[Any, Any]:
    started.append(made)
    return made


def parsed(raw: bytes) -> Any:
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)


@pytest.mark.parametrize("make", [ses, sendgrid, mailgun, postmark])
def test_each_fake_accepts_our_request_and_sees_our_message_id(
    started: list[Any], make: Callable[[], tuple[ProviderFake, Any]]
) -> None:
    fake, transport = pair(started, make())
    answer = transport.send(EMAIL)
    assert fake.refused == []
    assert isinstance(answer, Accepted) and answer.provider_message_id
    assert answer.reply.endswith(f"id={answer.provider_message_id}")
    [taken] = fake.taken
    assert (taken.recipient, taken.message_id) == (EMAIL.recipient, EMAIL.message_id)


@pytest.mark.parametrize("make", [ses, mailgun])
def test_raw_mime_providers_get_the_bytes_smtp_would_send_signed(
    started: list[Any], make: Callable[..., tuple[ProviderFake, Any]]
) -> None:
    key = new_key("rsa")
    fake, transport = pair(started, make(sign=DkimSigner(DOMAIN, SELECTOR, key).sign))
    transport.send(EMAIL)
    [taken] = fake.taken
    assert taken.raw is not None and Verifier(key).verify(taken.raw)  # signed bytes, intact
    message = parsed(taken.raw)
    assert message["Subject"] == CONTENT.subject and message["To"] == EMAIL.recipient
    assert message["List-Unsubscribe-Post"] == CONTENT.list_unsubscribe_post
    parts = [part.get_content() for part in message.iter_parts()]
    assert parts == [CONTENT.text, CONTENT.html]


def test_a_wrong_ses_secret_fails_the_signature_check(started: list[Any]) -> None:
    fake, transport = pair(started, ses(secret="not-the-secret"))
    with pytest.raises(SystemicFailure) as caught:
        transport.send(EMAIL)
    assert caught.value.detail == "403 ses InvalidSignatureException"
    assert fake.taken == [] and fake.refused[0][0] == 403


def test_a_body_changed_after_signing_fails_the_signature_check(started: list[Any]) -> None:
    fake, transport = pair(started, ses())
    body = json.dumps({"Content": {"Raw": {"Data": "TWVzc2FnZQ=="}}}).encode()
    headers = transport._signed_headers(body)
    tampered = body.replace(b"TWVzc2FnZQ==", b"VGFtcGVyZWQ=")
    answer = httpx.post(fake.url + "/v2/email/outbound-emails", content=tampered, headers=headers)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    assert httpx.post(fake.url + "/v2/email/outbound-emails", content=body).status_code == 400
    assert fake.taken == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: sendgrid(key="SG.wrong"),
        lambda: mailgun(key="wrong"),
        lambda: postmark(token="wrong"),
    ],
)
def test_wrong_credentials_are_refused_and_fail_over(
    started: list[Any], make: Callable[[], tuple[ProviderFake, Any]]
) -> None:
    fake, transport = pair(started, make())
    with pytest.raises(SystemicFailure) as caught:
        transport.send(EMAIL)
    assert caught.value.detail.startswith("401 ")
    assert fake.taken == [] and [status for status, _ in fake.refused] == [401]


@pytest.mark.parametrize(
    ("make", "reply", "expected", "reason", "detail"),
    [
        (
            ses,
            SesFake.error(400, "MessageRejected: virus"),
            PermanentFailure,
            Reason.MESSAGE_REJECTED,
            "400 ses MessageRejected",
        ),
        (
            ses,
            SesFake.error(400, "SendingPausedException: paused"),
            SystemicFailure,
            Reason.SMTP_AUTH_FAILED,
            "400 ses SendingPausedException",
        ),
        (
            postmark,
            PostmarkFake.error(422, "406 Found inactive addresses: ann@example.test"),
            PermanentFailure,
            Reason.RECIPIENT_REJECTED,
            "422 postmark 406",
        ),
        (
            postmark,
            PostmarkFake.error(422, "300 Invalid email request"),
            PermanentFailure,
            Reason.MESSAGE_REJECTED,
            "422 postmark 300",
        ),
        (
            sendgrid,
            SendGridFake.error(400, "personalizations.0.to.0.email|bad ann@x"),
            PermanentFailure,
            Reason.RECIPIENT_REJECTED,
            "400 sendgrid personalizations.0.to.0.email",
        ),
        (
            mailgun,
            MailgunFake.error(400, "'to' parameter is not a valid address ann@x"),
            PermanentFailure,
            Reason.MESSAGE_REJECTED,
            "400 mailgun",
        ),
        (
            mailgun,
            Reply(500, {"message": "boom"}),
            RelayUnavailable,
            Reason.SMTP_UNAVAILABLE,
            "500 mailgun",
        ),
        (
            sendgrid,
            Reply(302, b"", {"Location": "http://127.0.0.1:1/x"}),
            SystemicFailure,
            Reason.SMTP_AUTH_FAILED,
            "302 sendgrid",
        ),
    ],
)
def test_refusals_are_classified_without_the_providers_text(
    started: list[Any],
    make: Callable[[], tuple[ProviderFake, Any]],
    reply: Reply,
    expected: type[WorkerFailure],
    reason: Reason,
    detail: str,
) -> None:
    fake, transport = pair(started, make())
    fake.script(reply)
    with pytest.raises(WorkerFailure) as caught:
        transport.send(EMAIL)
    assert type(caught.value) is expected
    assert (caught.value.reason, caught.value.detail) == (reason, detail)
    assert "@" not in str(caught.value)
    assert fake.refused == []  # the request itself was valid


@pytest.mark.parametrize(
    ("make", "reply", "wait"),
    [
        (
            ses,
            Reply(
                429,
                {"message": "slow down"},
                {"Retry-After": "7", "x-amzn-ErrorType": "TooManyRequestsException:x"},
            ),
            7.0,
        ),
        (postmark, Reply(429, {"ErrorCode": 429, "Message": "Rate Limit Exceeded"}), None),
        (mailgun, Reply(429, {"message": "later"}, {"Retry-After": "3"}), 3.0),
    ],
)
def test_a_429_throttles_the_relay_for_the_advised_time(
    started: list[Any],
    make: Callable[[], tuple[ProviderFake, Any]],
    reply: Reply,
    wait: float | None,
) -> None:
    fake, transport = pair(started, make())
    fake.script(reply)
    with pytest.raises(ThrottledFailure) as caught:
        transport.send(EMAIL)
    assert (caught.value.route, caught.value.retry_after) == ("relay", wait)


def test_sendgrid_rate_limit_reset_is_the_pause(started: list[Any]) -> None:
    fake, transport = pair(started, sendgrid())
    reset = str(int(time.time()) + 30)
    fake.script(
        Reply(429, {"errors": [{"message": "too many requests"}]}, {"X-RateLimit-Reset": reset})
    )
    with pytest.raises(ThrottledFailure) as caught:
        transport.send(EMAIL)
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


@pytest.mark.parametrize("make", [ses, postmark])
def test_no_answer_after_the_request_left_is_ambiguous(
    started: list[Any], make: Callable[..., tuple[ProviderFake, Any]]
) -> None:
    fake, transport = pair(started, make(timeout=0.5))
    fake.script(Reply(200, {"MessageId": "late"}, delay=1.5))
    with pytest.raises(AmbiguousDelivery) as caught:
        transport.send(EMAIL)
    assert caught.value.reason is Reason.SMTP_UNKNOWN
    assert len(fake.taken) == 1  # the provider has it: never another relay


def test_a_refused_connection_fails_over() -> None:
    transport = SendGridTransport("SG.key", http(f"http://127.0.0.1:{closed_port()}"))
    with pytest.raises(RelayUnavailable) as caught:
        transport.send(EMAIL)
    assert caught.value.detail == "connect failed: ConnectError"
    transport.close()


def test_a_huge_answer_is_not_read_and_the_message_stays_accepted(started: list[Any]) -> None:
    fake, transport = pair(started, mailgun())
    fake.script(Reply(200, {"id": "<x@mg>", "message": "q" * 200_000}))
    answer = transport.send(EMAIL)
    assert isinstance(answer, Accepted) and answer.provider_message_id is None
