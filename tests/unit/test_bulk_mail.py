"""Bulk mail in the pipeline (email_worker/suppression/policy.py): one-click headers on mail
below PRIORITY_HIGH only, the template's List-Unsubscribe replaced there and kept elsewhere, an
unsubscribe stopping bulk mail only, and the UNSUBSCRIBE_URL check."""

from __future__ import annotations

import pytest

from email_worker.callbacks.url_policy import host_allowed
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.render.mime import build_message
from email_worker.render.renderer import TemplateRenderer
from email_worker.suppression.policy import ONE_CLICK, BulkMail, check_unsubscribe_url
from schemas.failures import PermanentFailure, Reason
from schemas.request import EmailRequest
from templates_client.template import Template
from tests.fakes import (
    FakeLedger,
    FakeMailer,
    FakeNotifier,
    FakeRecipients,
    FakeTemplates,
    email_request,
)

OWN = "<mailto:leave@lists.example.com>"
WELCOME = Template("welcome", None, "Hello", "<p>Hi</p>", None, "v1", OWN)


class Links:
    def url_for(self, address: str) -> str:
        return f"https://u.example.com/{len(address)}"


class Listed:
    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason

    def check(self, address: str) -> str | None:
        return self.reason

    def hard_bounce(self, address: str, detail: str) -> None:
        return None


LINKS = Links()


def world(
    reason: str | None = None, links: Links | None = LINKS, *, bulk_only: bool = False
) -> tuple[Pipeline, FakeMailer]:
    mailer = FakeMailer()
    pipeline = Pipeline(
        PipelineConfig(
            sender="noreply@example.com",
            message_id_secret=b"k" * 32,
            callback_url=None,
            callback_allowed_hosts=(),
            host_allowed=host_allowed,
        ),
        FakeLedger(),
        FakeRecipients({}),
        FakeTemplates({"welcome": WELCOME}),
        TemplateRenderer(),
        mailer,
        FakeNotifier(),
        suppressions=Listed(reason),
        bulk=BulkMail(priority_high=5, links=links, unsubscribe_stops_bulk_only=bulk_only),
    )
    return pipeline, mailer


def request(priority: int) -> EmailRequest:
    return email_request().model_copy(update={"priority": priority})


@pytest.mark.parametrize("priority", [0, 1, 4])
def test_bulk_mail_carries_the_worker_one_click_headers_instead_of_the_template_one(
    priority: int,
) -> None:
    pipeline, mailer = world()
    assert pipeline.attempt(request(priority)).failure is None
    (sent,) = mailer.sent
    assert sent.content.list_unsubscribe == "<https://u.example.com/15>"
    assert sent.content.list_unsubscribe_post == ONE_CLICK
    wire = build_message(sent).decode()
    assert "\r\nList-Unsubscribe: <https://u.example.com/15>\r\n" in wire
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in wire


@pytest.mark.parametrize(("priority", "links"), [(5, LINKS), (10, LINKS), (1, None)])
def test_other_mail_keeps_the_template_header_without_the_post_header(
    priority: int, links: Links | None
) -> None:
    pipeline, mailer = world(links=links)
    pipeline.attempt(request(priority))
    (sent,) = mailer.sent
    assert sent.content.list_unsubscribe == OWN and sent.content.list_unsubscribe_post is None
    assert "List-Unsubscribe-Post" not in build_message(sent).decode()


def test_the_amqp_priority_counts_too() -> None:
    pipeline, mailer = world()
    pipeline.attempt(request(1), amqp_priority=9)
    assert mailer.sent[0].content.list_unsubscribe_post is None


@pytest.mark.parametrize(
    ("reason", "priority", "suppressed"),
    [
        ("unsubscribe", 1, True),
        ("unsubscribe", 4, True),
        ("unsubscribe", 5, False),  # a password reset still reaches someone who left the list
        ("unsubscribe", 9, False),
        ("hard_bounce", 9, True),
        ("complaint", 9, True),
        ("manual", 9, True),
        ("manual", 0, True),
    ],
)
def test_with_scope_bulk_an_unsubscribe_stops_bulk_mail_only(
    reason: str, priority: int, suppressed: bool
) -> None:
    pipeline, mailer = world(reason, bulk_only=True)
    failure = pipeline.attempt(request(priority)).failure
    if suppressed:
        assert isinstance(failure, PermanentFailure) and failure.reason == Reason.SUPPRESSED
        assert failure.detail == reason and mailer.sent == []
    else:
        assert failure is None and len(mailer.sent) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://mail.example.com/unsubscribe/{token}",
        "https://mail.example.com/u?t={token}&list=news",
        "https://mail.example.com:8443/{token}",
    ],
)
def test_usable_unsubscribe_urls(url: str) -> None:
    assert check_unsubscribe_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://mail.example.com/{token}", "https://"),
        ("https:///{token}", "https://"),
        ("https://mail.example.com/unsubscribe", "exactly once"),
        ("https://{token}.example.com/", "exactly once"),
        ("https://mail.example.com/{token}/{token}", "exactly once"),
        ("https://mail.example.com/{token}?u={user}", "only placeholder"),
        ("https://mail.example.com/{token}#{", "only placeholder"),
        ("https://mail.example.com/a b/{token}", "no space"),
        ("https://mail.example.com/a,b/{token}", "no space"),
        ("https://mail.example.com/{token}>\r\nBcc: x@y", "no space"),
        ("https://mail.example.com/" + "p" * 400 + "/{token}", "at most 400"),
    ],
)
def test_unusable_unsubscribe_urls_are_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_unsubscribe_url(url)


@pytest.mark.parametrize("reason", ["unsubscribe", "hard_bounce", "complaint", "manual"])
@pytest.mark.parametrize("priority", [0, 4, 5, 9])
def test_by_default_a_suppressed_address_gets_nothing_whatever_the_priority(
    reason: str, priority: int
) -> None:
    pipeline, mailer = world(reason)  # UNSUBSCRIBE_SCOPE=all, the contract's rule
    failure = pipeline.attempt(request(priority)).failure
    assert isinstance(failure, PermanentFailure) and failure.reason == Reason.SUPPRESSED
    assert mailer.sent == []
