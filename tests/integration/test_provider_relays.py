"""The HTTP API providers as relays of the real worker (RabbitMQ, Postgres, and fakes of the
providers' APIs built from their docs, CONTRACT section 16): each takes a message with our
Message-ID and its id is recorded; a 429 defers without spending an attempt; a 5xx hands the
message to the next relay at once; a refusal of the recipient is final and never reaches the
next relay; no answer after the request is ``unknown`` and never fails over; no credential
shows in a log line, a relay name, a metric or an API answer."""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from email_worker.app import Worker
from tests.support.http import Reply
from tests.support.providers import (
    MailgunFake,
    PostmarkFake,
    ProviderFake,
    SendGridFake,
    SesFake,
)
from tests.support.smtp import SmtpTestServer
from tests.support.stack import CALLBACK_PATH, Stack, wait_for

pytestmark = pytest.mark.integration

REGION, MG_DOMAIN = "eu-west-1", "mg.acme.test"
Fake = tuple[ProviderFake, str, dict[str, Any]]  # the fake, its relay URL, its settings


def ses_fake(key_id: str = "AKIDTEST", secret: str = "ses-secret", ok: bool = True) -> Fake:
    fake = SesFake(REGION, key_id, secret)
    settings = {"ses_access_key_id": key_id, "ses_secret_access_key": secret if ok else "bad"}
    return fake, f"ses://{REGION}", settings | {"ses_endpoint_url": fake.url}


def sendgrid_fake(key: str = "SG.test-key", ok: bool = True) -> Fake:
    fake = SendGridFake(key)
    settings = {"sendgrid_api_key": key if ok else "SG.bad", "sendgrid_api_url": fake.url}
    return fake, "sendgrid://", settings


def mailgun_fake(key: str = "mg-test-key") -> Fake:
    fake = MailgunFake(MG_DOMAIN, key)
    return fake, f"mailgun://{MG_DOMAIN}", {"mailgun_api_key": key, "mailgun_api_url": fake.url}


def postmark_fake(token: str = "pm-test-token") -> Fake:
    fake = PostmarkFake(token)
    return fake, "postmark://", {"postmark_server_token": token, "postmark_api_url": fake.url}


@pytest.fixture
def fakes() -> Iterator[Callable[[Fake], Fake]]:
    started: list[ProviderFake] = []

    def keep(made: Fake) -> Fake:
        started.append(made[0])
        return made

    yield keep
    for fake in started:
        fake.stop()


def send_one(stack: Stack, label: str = "api") -> str:
    request_id = f"{label}-{uuid.uuid4().hex[:10]}"
    variables = {"name": "Ada", "link": "https://example.com/x"}
    message = {"request_id": request_id, "template_code": "welcome", "to_email": "ann@example.com"}
    stack.publish(message | {"variables": variables})
    return request_id


def row(stack: Stack, request_id: str) -> dict[str, Any]:
    [found] = stack.query(
        "SELECT status, relay, message_id, smtp_reply, provider_message_id, failure_reason"
        " FROM email_requests WHERE request_id = %s",
        request_id,
    )
    return found


def retry_reasons(stack: Stack, request_id: str) -> list[str]:
    events = stack.query(
        "SELECT coalesce(reason, '') AS reason FROM email_events"
        " WHERE request_id = %s AND status = 'pending' ORDER BY id",
        request_id,
    )
    return [e["reason"] for e in events]


def smtp_url(server: SmtpTestServer) -> str:
    return f"smtp://127.0.0.1:{server.port}"


@pytest.mark.parametrize("make", [ses_fake, sendgrid_fake, mailgun_fake, postmark_fake])
def test_each_provider_takes_the_message_and_its_id_is_recorded(
    stack: Stack, fakes: Callable[[Fake], Fake], make: Callable[[], Fake]
) -> None:
    fake, relay, settings = fakes(make())
    stack.start_worker(relays=relay, **settings)
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 20, "the provider to take it")
    found = row(stack, request_id)
    [taken] = fake.taken
    assert fake.refused == [] and stack.smtp.messages == []
    assert taken.message_id == found["message_id"]  # our Message-ID, as the fake saw it
    assert found["relay"] == relay and found["provider_message_id"] == fake.ids[0]
    assert found["smtp_reply"].endswith(f"id={fake.ids[0]}")
    if taken.raw is not None:  # SES and Mailgun: our MIME bytes, parsed back
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(taken.raw)
        assert message["Subject"] == "Hello Ada" and message["To"] == "ann@example.com"
    else:
        assert json.dumps(taken.body).count("Hello Ada") == 1
    wait_for(lambda: stack.callbacks(request_id) != [], 20, "the callback")
    assert [c["status"] for c in stack.callbacks(request_id)] == ["delivered"]


THROTTLES = [
    (postmark_fake, Reply(429, {"ErrorCode": 429, "Message": "Rate Limit Exceeded"})),
    (
        sendgrid_fake,
        Reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "1"}),
    ),
]
OUTAGES = [
    (ses_fake, Reply(503, {"message": "unavailable"}, {"x-amzn-ErrorType": "ServiceUnavailable"})),
    (sendgrid_fake, Reply(503, {"errors": [{"message": "service unavailable"}]})),
    (mailgun_fake, Reply(500, {"message": "internal error"})),
    (postmark_fake, Reply(503, b"")),
]


@pytest.mark.parametrize(("make", "reply"), THROTTLES)
def test_a_429_defers_without_spending_an_attempt(
    stack: Stack, fakes: Callable[[Fake], Fake], make: Callable[[], Fake], reply: Reply
) -> None:
    fake, relay, settings = fakes(make())
    fake.script(reply)
    stack.start_worker(relays=relay, **settings)
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 30, "the send after the pause")
    assert retry_reasons(stack, request_id) == ["throttled"]  # a deferral: no attempt spent
    wait_for(lambda: stack.callbacks(request_id) != [], 20, "the callback")
    assert [c["status"] for c in stack.callbacks(request_id)] == ["delivered"]  # no pending
    assert len(fake.taken) == 1


@pytest.mark.parametrize(("make", "reply"), OUTAGES)
def test_a_5xx_fails_over_to_the_next_relay_without_an_attempt(
    stack: Stack, fakes: Callable[[Fake], Fake], make: Callable[[], Fake], reply: Reply
) -> None:
    fake, relay, settings = fakes(make())
    fake.script(reply)
    worker = stack.start_worker(relays=f"{relay},{smtp_url(stack.smtp)}", **settings)
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 20, "the SMTP relay to take it")
    assert row(stack, request_id)["relay"] == smtp_url(stack.smtp)
    assert len(stack.smtp.messages) == 1 and fake.taken == []
    assert retry_reasons(stack, request_id) == []  # within the same claim: nothing spent
    assert sends(worker, relay, "unavailable") == 1
    wait_for(lambda: stack.callbacks(request_id) != [], 20, "the callback")
    assert [c["status"] for c in stack.callbacks(request_id)] == ["delivered"]


def test_a_recipient_refusal_is_permanent_and_never_reaches_the_next_relay(
    stack: Stack, fakes: Callable[[Fake], Fake]
) -> None:
    fake, relay, settings = fakes(postmark_fake())
    fake.script(PostmarkFake.error(422, "406 Found inactive addresses: ann@example.com."))
    stack.start_worker(relays=f"{relay},{smtp_url(stack.smtp)}", **settings)
    request_id = send_one(stack)
    record = stack.dead_letter(request_id)
    assert record.headers.failure_reason == "recipient_rejected"
    found = row(stack, request_id)
    assert (found["status"], found["relay"]) == ("failed", relay)
    assert stack.smtp.messages == [] and stack.smtp.connections == 0


def test_no_answer_after_the_request_is_unknown_and_never_fails_over(
    stack: Stack, fakes: Callable[[Fake], Fake]
) -> None:
    fake, relay, settings = fakes(ses_fake())
    fake.script(Reply(200, {"MessageId": "too-late"}, delay=2.5))
    stack.start_worker(relays=f"{relay},{smtp_url(stack.smtp)}", smtp_timeout=1, **settings)
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 30, "the re-send through SES")
    events = stack.query(
        "SELECT event FROM email_events WHERE request_id = %s ORDER BY id", request_id
    )
    assert "unknown" in [e["event"] for e in events]
    assert stack.smtp.connections == 0  # never the next relay after an ambiguous end
    assert [t.message_id for t in fake.taken] == [row(stack, request_id)["message_id"]] * 2


def sends(worker: Worker, relay: str, result: str) -> float:
    labels = {"relay": relay, "result": result}
    return worker.metrics.registry.get_sample_value("email_worker_sends_total", labels) or 0.0


def test_no_credential_shows_in_logs_names_metrics_or_the_status_api(
    stack: Stack, fakes: Callable[[Fake], Fake], caplog: pytest.LogCaptureFixture
) -> None:
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in ("id", "ses", "sg", "pm")}
    ses, ses_relay, ses_settings = fakes(ses_fake(secrets["id"], secrets["ses"], ok=False))
    sg, sg_relay, sg_settings = fakes(sendgrid_fake(secrets["sg"], ok=False))
    pm, pm_relay, pm_settings = fakes(postmark_fake(secrets["pm"]))
    caplog.set_level(logging.DEBUG)
    worker = stack.start_worker(
        relays=f"{ses_relay},{sg_relay},{pm_relay}",
        status_api_token="tok",
        **ses_settings,
        **sg_settings,
        **pm_settings,
    )
    request_id = send_one(stack)
    wait_for(lambda: stack.status(request_id) == "sent", 20, "Postmark to take it")
    assert [status for status, _ in ses.refused] == [403] and sg.refused[0][0] == 401
    assert len(pm.taken) == 1 and ses.taken == sg.taken == []
    assert not worker.consumer.paused  # refused credentials on some relays only: no pause
    code, body, _ = worker.status_api()(f"/api/v1/notifications/{request_id}", "Bearer tok")
    assert code == 200 and body["data"]["relay"] == pm_relay
    exposition = generate_latest(worker.metrics.registry).decode()
    texts = {
        "status API": json.dumps(body),
        "metrics": exposition,
        "readiness": json.dumps(worker.readiness().relays),
        "logs": "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
        "names": " ".join(worker.mailer.names),
        "callbacks": json.dumps([s.json() for s in stack.http.seen("POST", CALLBACK_PATH)]),
    }
    assert ses_relay in texts["logs"] and sg_relay in texts["logs"]  # the failovers, by name
    for where, text in texts.items():
        for secret in secrets.values():
            assert secret not in text, where
