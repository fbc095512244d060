"""Each provider's endpoint behind the webhook route, with real signatures (keys and
certificates generated here, payloads shaped as the providers document them): the authentic
report acts, and every tampered twin (body changed, signature changed, wrong key, stale
timestamp, replay) answers 4xx and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from email_worker.reports.intake import ReportIntake
from email_worker.webhooks.dispatch import WebhookDispatcher
from email_worker.webhooks.endpoints import (
    MAILGUN_PAST,
    SENDGRID_PAST,
    DsnEndpoint,
    MailgunEndpoint,
    PostmarkEndpoint,
    SendGridEndpoint,
    SesEndpoint,
)
from email_worker.webhooks.signatures import SendGridKey, SnsCertificates
from tests.fakes import FakeNotifier, FakeReportLedger, FakeSuppressionList
from tests.support import webhook_payloads as p
from tests.support import webhooks as w

ADA, MID = "ada@example.org", "<3f2a9c@acme.test>"
NOW = 1_780_000_000
MAILGUN_KEY, POSTMARK = "key-0123456789abcdef", ("hooks", "s3cret pass")
DSN_TOKEN = "dsn-token-0123456789"


class World:
    def __init__(self) -> None:
        self.sns, self.sendgrid = w.SnsSigner(), w.SendGridSigner()
        self.ledger = FakeReportLedger({MID: ("req-1", ADA)})
        self.suppressions = FakeSuppressionList()
        self.notifier = FakeNotifier()
        self.counted: list[tuple[str, str]] = []
        intake = ReportIntake(self.ledger, self.suppressions, self.notifier)
        certificates = SnsCertificates.from_pem(self.sns.certificate_pem())
        key = SendGridKey.from_text(self.sendgrid.public_key())
        clock = lambda: float(NOW)  # noqa: E731
        self.route = WebhookDispatcher(
            [
                SesEndpoint(certificates, intake),
                SendGridEndpoint(key, intake, self.ledger, clock),
                MailgunEndpoint(MAILGUN_KEY, intake, self.ledger, clock),
                PostmarkEndpoint(*POSTMARK, intake),
                DsnEndpoint(DSN_TOKEN, intake),
            ],
            count=lambda provider, result: self.counted.append((provider, result)),
        )

    def post(self, signed: w.Signed) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {name.lower(): value for name, value in signed.headers.items()}
        status, payload, content_type, extra = self.route("POST", signed.path, headers, signed.body)
        assert content_type == "application/json"
        return status, json.loads(payload), extra

    def nothing_changed(self) -> bool:
        return (
            not self.suppressions.added and not self.ledger.status and not self.notifier.handed_over
        )


@pytest.fixture
def world() -> World:
    return World()


def _ses(world: World) -> w.Signed:
    return w.sns_notification(world.sns, w.ses_bounce(ADA, MID))


def _sendgrid(world: World) -> w.Signed:
    return world.sendgrid.post([w.sendgrid_event("bounce", ADA, MID, type="bounce")], NOW)


def _mailgun(world: World) -> w.Signed:
    return p.mailgun_post(MAILGUN_KEY, p.mailgun_failed(ADA, MID), NOW)


def _postmark(world: World) -> w.Signed:
    return p.postmark_post(p.postmark_bounce(ADA), *POSTMARK)


def _dsn(world: World) -> w.Signed:
    return p.dsn_post(p.dsn(ADA, MID), DSN_TOKEN)


AUTHENTIC: dict[str, Callable[[World], w.Signed]] = {
    "ses": _ses,
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "postmark": _postmark,
    "dsn": _dsn,
}


@pytest.mark.parametrize("provider", AUTHENTIC)
def test_an_authentic_hard_bounce_suppresses_the_address(world: World, provider: str) -> None:
    status, body, _ = world.post(AUTHENTIC[provider](world))
    assert status == 200 and body["status"] == "accepted"
    assert [(a, r, s) for a, r, s, _ in world.suppressions.added] == [
        (ADA, "hard_bounce", provider)
    ]
    assert world.counted == [(provider, "accepted")]
    # Postmark names its own id only: nothing of ours to tie to; the others name our Message-ID.
    tied = provider != "postmark"
    assert world.ledger.status == ({"req-1": "bounced"} if tied else {})
    assert world.notifier.handed_over == ([1] if tied else [])


def _flip_last_byte(signed: w.Signed) -> w.Signed:
    return signed.with_body(signed.body[:-2] + bytes([signed.body[-2] ^ 1]) + signed.body[-1:])


def _ses_twins(world: World) -> list[w.Signed]:
    good = _ses(world)
    message = json.loads(good.body)
    other = w.SnsSigner().sign({k: v for k, v in message.items() if k != "Signature"})
    changed = message | {"Message": message["Message"].replace(ADA, "eve@example.org")}
    version = message | {"SignatureVersion": "2"}  # the same signature claimed as SHA-256
    return [
        good.with_body(json.dumps(changed).encode()),
        good.with_body(json.dumps(other).encode()),  # signed by another key
        good.with_body(json.dumps(version).encode()),
        good.with_body(json.dumps(message | {"Signature": message["Signature"][::-1]}).encode()),
    ]


def _sendgrid_twins(world: World) -> list[w.Signed]:
    good = _sendgrid(world)
    stale = world.sendgrid.post(json.loads(good.body), int(NOW - SENDGRID_PAST - 60))
    signature = "X-Twilio-Email-Event-Webhook-Signature"
    return [
        good.with_body(good.body.replace(b"ada@", b"eve@")),
        w.SendGridSigner().post(json.loads(good.body), NOW),  # another key
        good.with_header(signature, _sendgrid(world).headers[signature][:-4] + "AAA="),
        good.with_header("X-Twilio-Email-Event-Webhook-Timestamp", str(NOW + 1)),
        stale,
        w.Signed(good.path, {"Content-Type": "application/json"}, good.body),  # unsigned
    ]


def _mailgun_twins(world: World) -> list[w.Signed]:
    good = _mailgun(world)
    document = json.loads(good.body)
    block = document["signature"]
    forged = document | {"signature": block | {"signature": "0" * 64}}
    return [
        p.mailgun_post("another-key", p.mailgun_failed(ADA, MID), NOW),
        good.with_body(json.dumps(forged).encode()),
        good.with_body(json.dumps(document | {"signature": block | {"token": "x" * 50}}).encode()),
        p.mailgun_post(MAILGUN_KEY, p.mailgun_failed(ADA, MID), int(NOW - MAILGUN_PAST - 60)),
        p.mailgun_post(MAILGUN_KEY, p.mailgun_failed(ADA, MID), NOW + 3600),  # from the future
    ]


def _postmark_twins(world: World) -> list[w.Signed]:
    document = p.postmark_bounce(ADA)
    good = _postmark(world)
    return [
        p.postmark_post(document, POSTMARK[0], "wrong"),
        p.postmark_post(document, "wrong", POSTMARK[1]),
        w.Signed(good.path, {"Content-Type": "application/json"}, good.body),
        good.with_header("Authorization", "Bearer " + POSTMARK[1]),
    ]


def _dsn_twins(world: World) -> list[w.Signed]:
    good = _dsn(world)
    return [
        p.dsn_post(p.dsn(ADA, MID), "wrong-token"),
        good.with_header("Authorization", "Basic " + DSN_TOKEN),
        w.Signed(good.path, {}, good.body),
    ]


TWINS: dict[str, Callable[[World], list[w.Signed]]] = {
    "ses": _ses_twins,
    "sendgrid": _sendgrid_twins,
    "mailgun": _mailgun_twins,
    "postmark": _postmark_twins,
    "dsn": _dsn_twins,
}


@pytest.mark.parametrize("provider", TWINS)
def test_every_tampered_twin_is_refused_and_changes_nothing(world: World, provider: str) -> None:
    for twin in TWINS[provider](world):
        status, body, _ = world.post(twin)
        assert 400 <= status < 500, (provider, body)
        assert body["status"] == "refused"
    assert world.nothing_changed()
    assert all(result != "accepted" for _, result in world.counted)


def test_mailgun_refusals_are_406_so_mailgun_does_not_retry(world: World) -> None:
    for twin in _mailgun_twins(world):
        assert world.post(twin)[0] == 406


def test_credentials_missing_or_wrong_get_a_challenge(world: World) -> None:
    assert world.post(_postmark_twins(world)[0])[2]["WWW-Authenticate"].startswith("Basic ")
    assert world.post(_dsn_twins(world)[0])[2]["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun"])
def test_a_replayed_post_is_refused(world: World, provider: str) -> None:
    signed = AUTHENTIC[provider](world)
    assert world.post(signed)[0] == 200
    status, body, _ = world.post(signed)
    assert status == (406 if provider == "mailgun" else 403) and body["error"] == "replayed"
    assert len(world.suppressions.added) == 1


def test_a_mailgun_token_is_good_once_whatever_body_comes_with_it(world: World) -> None:
    # Mailgun signs timestamp + token, not the body: a second body under the same signature
    # block is the replay that matters.
    first = p.mailgun_post(MAILGUN_KEY, p.mailgun_failed(ADA, MID), NOW, token="t" * 50)
    second = p.mailgun_post(
        MAILGUN_KEY, p.mailgun_failed("eve@example.org", "<x@y>"), NOW, token="t" * 50
    )
    assert world.post(first)[0] == 200
    assert world.post(second)[0] == 406
    assert [added[0] for added in world.suppressions.added] == [ADA]


def test_sns_signature_version_2_is_verified_with_sha256(world: World) -> None:
    signed = w.sns_notification(world.sns, w.ses_bounce(ADA, MID), version="2")
    assert world.post(signed)[0] == 200
    message = json.loads(signed.body) | {"SignatureVersion": "1"}
    assert world.post(signed.with_body(json.dumps(message).encode()))[0] == 403


def test_a_subscription_confirmation_is_answered_but_never_confirmed(world: World) -> None:
    status, body, _ = world.post(w.sns_confirmation(world.sns))
    assert status == 200 and body["status"] == "not_confirmed"
    assert body["topic_arn"] == w.TOPIC
    assert world.nothing_changed()


def test_a_soft_bounce_changes_nothing_but_the_count() -> None:
    world = World()
    counted: list[tuple[str, str]] = []
    intake = ReportIntake(
        world.ledger, world.suppressions, world.notifier, lambda p, k: counted.append((p, k))
    )
    route = WebhookDispatcher([PostmarkEndpoint(*POSTMARK, intake)])
    soft = p.postmark_post(p.postmark_bounce(ADA, "SoftBounce", 4096), *POSTMARK)
    headers = {name.lower(): value for name, value in soft.headers.items()}
    assert route("POST", soft.path, headers, soft.body)[0] == 200
    assert counted == [("postmark", "soft_bounce")]
    assert world.nothing_changed()


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [("/webhooks/nope", "POST", 404), ("/webhooks/", "POST", 404), ("/webhooks/ses", "GET", 405)],
)
def test_unknown_providers_and_methods(world: World, path: str, method: str, status: int) -> None:
    assert world.route(method, path, {}, b"")[0] == status


def test_an_unset_provider_answers_404() -> None:
    route = WebhookDispatcher([])
    signed = p.dsn_post(p.dsn(ADA, MID), DSN_TOKEN)
    assert (
        route("POST", signed.path, {"authorization": f"Bearer {DSN_TOKEN}"}, signed.body)[0] == 404
    )


@pytest.mark.parametrize("provider", ["ses", "sendgrid", "mailgun", "postmark", "dsn"])
def test_an_authentic_post_whose_body_is_not_a_report_is_400(world: World, provider: str) -> None:
    junk = b'{"not": "a report"}' if provider != "dsn" else b"Subject: hi\r\n\r\nbody"
    signed = {
        "ses": lambda: w.Signed("/webhooks/ses", {}, junk),
        "sendgrid": lambda: world.sendgrid.post({"not": "a list"}, NOW),  # type: ignore[arg-type]
        "mailgun": lambda: w.Signed("/webhooks/mailgun", {}, junk),
        "postmark": lambda: p.postmark_post({"no": "record type"}, *POSTMARK),
        "dsn": lambda: p.dsn_post(junk, DSN_TOKEN),
    }[provider]()
    status, body, _ = world.post(signed)
    assert status == 400 and body["error"] == "malformed"
    assert world.nothing_changed()
