"""The pipeline takes the suppression answer the claim carries (``Claim.suppression``, read in
the claim's own statement) for the very address it checked, and asks the list itself for any
other address, or when the claim carries none."""

from __future__ import annotations

from dataclasses import replace

from email_worker.callbacks.url_policy import host_allowed
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import AlreadySent, Claim, SuppressionCheck
from email_worker.render.renderer import TemplateRenderer
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

WELCOME = Template("welcome", None, "Hello", "<p>Hi</p>", None, "v1")


class CheckingLedger(FakeLedger):
    """A ledger whose claims carry ``answer``, as ``PgLedger(check_suppressions=True)``."""

    def __init__(self, answer: SuppressionCheck | None) -> None:
        super().__init__()
        self.answer = answer

    def claim(self, request: EmailRequest) -> Claim | AlreadySent:
        claim = super().claim(request)
        return replace(claim, suppression=self.answer) if isinstance(claim, Claim) else claim


class CountingList:
    def __init__(self, listed: dict[str, str]) -> None:
        self.listed, self.asked = listed, 0

    def check(self, address: str) -> str | None:
        self.asked += 1
        return self.listed.get(address)

    def hard_bounce(self, address: str, detail: str) -> None:
        return None


def pipeline(
    answer: SuppressionCheck | None, listed: dict[str, str]
) -> tuple[Pipeline, FakeMailer, CountingList]:
    mailer, suppressions = FakeMailer(), CountingList(listed)
    config = PipelineConfig(
        sender="noreply@example.com",
        message_id_secret=b"k" * 32,
        callback_url=None,
        callback_allowed_hosts=(),
        host_allowed=host_allowed,
    )
    built = Pipeline(
        config,
        CheckingLedger(answer),
        FakeRecipients({}),
        FakeTemplates({"welcome": WELCOME}),
        TemplateRenderer(),
        mailer,
        FakeNotifier(),
        suppressions=suppressions,
    )
    return built, mailer, suppressions


def test_the_claims_answer_for_the_address_is_used_and_the_list_not_asked_again() -> None:
    answer = SuppressionCheck("ada@example.com", "complaint")
    built, mailer, suppressions = pipeline(answer, {})
    attempt = built.attempt(email_request("c-1"))
    assert isinstance(attempt.failure, PermanentFailure)
    assert attempt.failure.reason == Reason.SUPPRESSED and attempt.failure.detail == "complaint"
    assert mailer.sent == [] and suppressions.asked == 0


def test_a_claim_that_found_the_address_unlisted_sends_without_asking_again() -> None:
    built, mailer, suppressions = pipeline(SuppressionCheck("ada@example.com", None), {})
    attempt = built.attempt(email_request("c-2"))
    assert attempt.failure is None and len(mailer.sent) == 1 and suppressions.asked == 0


def test_an_answer_for_another_address_or_none_leaves_it_to_the_list() -> None:
    listed = {"ada@example.com": "hard_bounce"}
    for answer in (SuppressionCheck("someone-else@example.com", None), None):
        built, mailer, suppressions = pipeline(answer, listed)
        attempt = built.attempt(email_request("c-3"))
        assert isinstance(attempt.failure, PermanentFailure)
        assert attempt.failure.reason == Reason.SUPPRESSED and suppressions.asked == 1
        assert mailer.sent == []
