"""Template and user services of other shapes, end to end with a real worker (CONTRACT sections
5 and 6): TEMPLATE_PATH / TEMPLATE_FIELDS / TEMPLATE_SERVICE_TOKEN against a service that
checks the token strictly, ``template_invalid`` for an answer in an unknown shape (dead-lettered
at once, breaker closed), and a refused token (401/403) that pauses consumption and resumes by
itself once the service accepts again, for both services."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.support.http import Reply, Seen
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

TOKEN = "svc-t0ken"
TEMPLATE_PATH = "/v2/templates/{template_code}"
CONTRACT_SHAPE = {
    "data": {"name": "Welcome to {{ name }}", "content": "<h1>Hi {{ name }}</h1>", "version": 1}
}
CONTRACT_FIELDS = "subject=data.name,html=data.content,text=data.plain,version=data.version"


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


def message(request_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.com/start"},  # the stack's template
        **extra,
    }


class Guarded:
    """A service endpoint that checks ``header`` strictly and can stop and resume accepting
    (a revoked, then restored, key on the service's side)."""

    def __init__(
        self,
        header: str,
        expected: str,
        good: Reply,
        refused: int = 401,
        accepting: threading.Event | None = None,
    ) -> None:
        self.header, self.expected, self.good, self.refused = header, expected, good, refused
        self.accepting = accepting or threading.Event()
        if accepting is None:
            self.accepting.set()

    def __call__(self, request: Seen) -> Reply:
        if self.accepting.is_set() and request.headers.get(self.header) == self.expected:
            return self.good
        return Reply(self.refused, {"success": False, "error": "unauthorized"})


def test_contract_shaped_template_service_with_path_token_and_fields(stack: Stack) -> None:
    service = Guarded("Authorization", f"Bearer {TOKEN}", Reply(200, CONTRACT_SHAPE))
    stack.http.route("GET", "/v2/templates/welcome", service)
    stack.start_worker(
        template_path=TEMPLATE_PATH, template_service_token=TOKEN, template_fields=CONTRACT_FIELDS
    )
    request_id = rid()
    stack.publish(message(request_id, to_email="shape@example.com", language="fr"))

    wait_for(lambda: stack.status(request_id) == "sent", 20, "delivery")
    (email,) = stack.emails_to("shape@example.com")
    assert email.parsed()["Subject"] == "Welcome to Ada"
    seen = stack.http.seen("GET", "/v2/templates/welcome?language=fr")
    assert seen and all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in seen)


def test_an_answer_in_an_unknown_shape_is_template_invalid_at_once(stack: Stack) -> None:
    stack.http.route("GET", "/api/v1/templates/shaped", Reply(200, CONTRACT_SHAPE))
    worker = stack.start_worker()
    ids = [rid() for _ in range(4)]  # more than BREAKER_FAIL_MAX (3)
    for n, request_id in enumerate(ids):
        stack.publish(message(request_id, template_code="shaped", to_email=f"i{n}@example.com"))

    for request_id in ids:
        record = stack.dead_letter(request_id)
        assert record.headers.failure_reason == "template_invalid"
        assert record.headers.failure_detail == "answer has no subject (subject or title)"
        assert record.headers.attempts == 1
    assert worker.templates.breaker_state == "closed"
    assert len(stack.http.seen("GET", "/api/v1/templates/shaped")) == len(ids)  # no retries
    wait_for(lambda: all(stack.callbacks(r) for r in ids), 20, "failed callbacks")
    assert stack.callbacks(ids[0])[-1]["error"].startswith("template_invalid")
    assert not stack.smtp.messages


def _paused_then_resumed(
    stack: Stack, accepting: threading.Event, cause: str, **overrides: Any
) -> None:
    """Publish three messages (to users user-0..2) while the service refuses; check the pause
    and that nothing failed; let the service accept; check each is delivered once."""
    accepting.clear()
    worker = stack.start_worker(pause_seconds=0.5, **overrides)
    ids = [rid() for _ in range(3)]
    for n, request_id in enumerate(ids):
        stack.publish(message(request_id, user_id=f"user-{n}"))

    wait_for(lambda: worker.consumer.pause_cause == cause, 20, "the pause")
    readiness = worker.readiness()
    assert readiness.paused is not None and readiness.paused["cause"] == cause
    assert stack.dead_letters() == []
    assert not stack.smtp.messages
    assert all(stack.status(r) != "failed" for r in ids)

    accepting.set()
    wait_for(lambda: all(stack.status(r) == "sent" for r in ids), 30, "delivery after the pause")
    wait_for(lambda: worker.consumer.pause_cause is None, 10, "the pause to end")
    assert stack.dead_letters() == []
    assert [len(stack.emails_to(f"u{n}@example.com")) for n in range(3)] == [1, 1, 1]


def test_a_refused_template_token_pauses_then_resumes_by_itself(stack: Stack) -> None:
    service = Guarded("Authorization", f"Bearer {TOKEN}", Reply(200, CONTRACT_SHAPE), 401)
    stack.http.route("GET", "/v2/templates/welcome", service)
    for n in range(3):
        record = Reply(200, {"email": f"u{n}@example.com"})
        stack.http.route("GET", f"/api/v1/users/user-{n}", record)
    _paused_then_resumed(
        stack,
        service.accepting,
        "template_service_unauthorized",
        template_path=TEMPLATE_PATH,
        template_service_token=TOKEN,
        template_fields=CONTRACT_FIELDS,
    )


def test_a_refused_user_service_key_pauses_then_resumes_by_itself(stack: Stack) -> None:
    accepting = threading.Event()
    for n in range(3):
        record = {"data": {"contact": {"email": f"u{n}@example.com"}, "full_name": "Ada"}}
        service = Guarded("X-Api-Key", TOKEN, Reply(200, record), 403, accepting)
        stack.http.route("GET", f"/users/user-{n}", service)
    _paused_then_resumed(
        stack,
        accepting,
        "user_service_unauthorized",
        user_service_path="/users/{user_id}",
        user_service_token=TOKEN,
        user_service_auth_header="X-Api-Key",
        user_fields="email=data.contact.email,name=data.full_name",
    )
