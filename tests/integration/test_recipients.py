"""RecipientDirectory and UserServiceClient against a real HTTP server (CONTRACT sections 3, 6)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping

import httpx
import pytest

from email_worker.ports import Recipient
from email_worker.recipients import USER_FIELD_NAMES, RecipientDirectory, UserServiceClient
from schemas.failures import (
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
)
from schemas.request import EmailRequest
from templates_client.fields import parse_field_paths
from templates_client.transport import make_http_client
from tests.support.http import FakeHttpServer, Reply, Seen

pytestmark = pytest.mark.integration

USER = "3f0c9a52-1b2e-4c7d-9a55-2f1a8c0d7e61"
PATH = f"/api/v1/users/{USER}"
TOKEN = "s3cret-token"


def _request(*, recipient: str | None = None, user_id: str | None = USER) -> EmailRequest:
    return EmailRequest(
        request_id="req-1",
        notification_id="req-1",
        correlation_id="req-1",
        template_code="welcome",
        recipient=recipient,
        user_id=user_id,
        payload_hash=hashlib.sha256(b"x").hexdigest(),
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with make_http_client(1.0) as client:
        yield client


def _directory(
    server: FakeHttpServer, http: httpx.Client, token: str | None = TOKEN, fail_max: int = 3
) -> RecipientDirectory:
    users = UserServiceClient(server.url, http, token, fail_max=fail_max, reset_seconds=30)
    return RecipientDirectory(users)


def test_address_in_the_message_never_calls_the_service(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    directory = _directory(http_server, http)
    recipient = directory.resolve(_request(recipient="ada@example.com"))
    assert recipient == Recipient(address="ada@example.com")
    assert RecipientDirectory(None).resolve(_request(recipient="ada@example.com")) == recipient
    assert http_server.seen() == []


def test_user_record_with_token_header(http_server: FakeHttpServer, http: httpx.Client) -> None:
    record = {"email": "ada@EXAMPLE.com", "name": "Ada", "preferences": {"email": True}}
    http_server.route("GET", PATH, Reply(200, record))
    recipient = _directory(http_server, http).resolve(_request())
    assert recipient == Recipient(address="ada@example.com", name="Ada")
    [seen] = http_server.seen("GET", PATH)
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"


def test_envelope_answer_without_token(http_server: FakeHttpServer, http: httpx.Client) -> None:
    record = {"email": "bob@example.com", "push_token": None}
    http_server.route("GET", PATH, Reply(200, {"success": True, "data": record, "message": "ok"}))
    recipient = _directory(http_server, http, token=None).resolve(_request())
    assert recipient == Recipient(address="bob@example.com", name=None)
    [seen] = http_server.seen("GET", PATH)
    assert "Authorization" not in seen.headers


def test_user_id_is_path_escaped(http_server: FakeHttpServer, http: httpx.Client) -> None:
    escaped = "/api/v1/users/..%2Fadmin%3Fx%3D1%23"
    http_server.route("GET", escaped, Reply(200, {"email": "c@example.com"}))
    recipient = _directory(http_server, http).resolve(_request(user_id="../admin?x=1#"))
    assert recipient.address == "c@example.com"
    assert [r.path for r in http_server.seen()] == [escaped]


@pytest.mark.parametrize("flag", [False, "false", "OFF", 0])
def test_opted_out_user_is_permanent(
    http_server: FakeHttpServer, http: httpx.Client, flag: object
) -> None:
    record = {"email": "ada@example.com", "preferences": {"email": flag, "push": True}}
    http_server.route("GET", PATH, Reply(200, record))
    with pytest.raises(PermanentFailure) as caught:
        _directory(http_server, http).resolve(_request())
    assert caught.value.reason is Reason.OPTED_OUT


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"name": "No Mail"}, Reason.RECIPIENT_UNKNOWN),
        ({"email": None}, Reason.RECIPIENT_UNKNOWN),
        ({"email": ""}, Reason.RECIPIENT_UNKNOWN),
        ({"email": "   "}, Reason.RECIPIENT_UNKNOWN),
        ({"email": "not-an-address"}, Reason.RECIPIENT_INVALID),
        ({"email": "a@example.com\r\nBcc: b@example.com"}, Reason.RECIPIENT_INVALID),
        ({"email": "a@example.com, b@example.com"}, Reason.RECIPIENT_INVALID),
        ({"email": ["a@example.com"]}, Reason.RECIPIENT_INVALID),
    ],
)
def test_missing_or_invalid_address(
    http_server: FakeHttpServer, http: httpx.Client, record: dict[str, object], reason: Reason
) -> None:
    http_server.route("GET", PATH, Reply(200, record))
    with pytest.raises(PermanentFailure) as caught:
        _directory(http_server, http).resolve(_request())
    assert caught.value.reason is reason
    assert "example.com" not in caught.value.detail


def test_no_address_and_no_user_service_is_missing() -> None:
    with pytest.raises(PermanentFailure) as caught:
        RecipientDirectory(None).resolve(_request())
    assert caught.value.reason is Reason.RECIPIENT_MISSING
    with pytest.raises(PermanentFailure):
        RecipientDirectory(None).resolve(_request(user_id=None))


def test_unknown_user_is_permanent_and_keeps_the_breaker_closed(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    users = UserServiceClient(http_server.url, http, TOKEN, fail_max=2, reset_seconds=30)
    for _ in range(5):
        with pytest.raises(PermanentFailure) as caught:
            RecipientDirectory(users).resolve(_request())
        assert caught.value.reason is Reason.RECIPIENT_UNKNOWN
    assert users.breaker_state == "closed"
    assert len(http_server.seen("GET", PATH)) == 5


def test_5xx_is_transient_then_the_breaker_defers(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, Reply(503, "down"))
    users = UserServiceClient(http_server.url, http, TOKEN, fail_max=2, reset_seconds=30)
    directory = RecipientDirectory(users)
    for _ in range(2):
        with pytest.raises(TransientFailure) as caught:
            directory.resolve(_request())
        assert not isinstance(caught.value, DeferredFailure)
        assert caught.value.reason is Reason.USER_SERVICE_UNAVAILABLE
    assert users.breaker_state == "open"
    with pytest.raises(DeferredFailure) as deferred:
        directory.resolve(_request())
    assert deferred.value.reason is Reason.USER_SERVICE_UNAVAILABLE
    assert len(http_server.seen("GET", PATH)) == 2


def test_a_timeout_is_transient(http_server: FakeHttpServer) -> None:
    http_server.route("GET", PATH, Reply(200, {"email": "a@example.com"}, delay=0.6))
    with make_http_client(0.2) as http, pytest.raises(TransientFailure) as caught:
        _directory(http_server, http).resolve(_request())
    assert caught.value.reason is Reason.USER_SERVICE_UNAVAILABLE
    assert "timeout" in caught.value.detail


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (Reply(200, "garbage{"), "not usable JSON"),
        (Reply(200, '{"data": ' * 200 + "{}" + "}" * 200), "nesting is deeper than 32"),
        (Reply(200, '{"email": "\\ud800@example.com"}'), "lone surrogate"),
        (Reply(200, ["a@example.com"]), "no record"),
        (Reply(200, {"success": False, "data": {"email": "a@example.com"}}), "no record"),
        (Reply(200, {"success": True, "data": {"name": "Ada"}}), "has no address (email)"),
        (Reply(400, {"error": "bad id"}), "HTTP 400"),
        (Reply(410, {"error": "gone"}), "HTTP 410"),
    ],
)
def test_answers_that_are_no_user_record_are_permanent_and_keep_the_breaker_closed(
    http_server: FakeHttpServer, http: httpx.Client, reply: Reply, detail: str
) -> None:
    http_server.route("GET", PATH, reply)
    users = UserServiceClient(http_server.url, http, TOKEN, fail_max=2, reset_seconds=30)
    for _ in range(3):
        with pytest.raises(PermanentFailure) as caught:
            RecipientDirectory(users).resolve(_request())
        assert caught.value.reason is Reason.RECIPIENT_UNKNOWN
        assert detail in caught.value.detail
        assert "example.com" not in caught.value.detail
    assert users.breaker_state == "closed"


def _guarded(header: str, expected: str, record: Mapping[str, object]) -> Callable[[Seen], Reply]:
    """A user service that checks its credentials strictly, as a real one does."""

    def answer(request: Seen) -> Reply:
        if request.headers.get(header) != expected:
            return Reply(403, {"success": False, "error": "forbidden"})
        return Reply(200, dict(record))

    return answer


USER_FIELDS = "email=data.contact.email,name=data.full_name,email_enabled=data.settings.email"
MAPPED = {"data": {"contact": {"email": "ada@example.com"}, "full_name": "Ada L."}}


def test_user_fields_path_and_a_custom_auth_header(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    path = f"/users?id={USER}"
    http_server.route("GET", "/users", _guarded("X-Api-Key", TOKEN, MAPPED))
    users = UserServiceClient(
        http_server.url,
        http,
        TOKEN,
        path="/users?id={user_id}",
        auth_header="X-Api-Key",
        fields=parse_field_paths(USER_FIELDS, USER_FIELD_NAMES),
    )
    recipient = RecipientDirectory(users).resolve(_request())
    assert recipient == Recipient(address="ada@example.com", name="Ada L.")
    [seen] = http_server.seen("GET")
    assert seen.path == path
    assert "Authorization" not in seen.headers


def test_user_fields_read_the_email_preference(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    record = {"data": {"contact": {"email": "ada@example.com"}, "settings": {"email": False}}}
    http_server.route("GET", PATH, Reply(200, record))
    users = UserServiceClient(
        http_server.url, http, TOKEN, fields=parse_field_paths(USER_FIELDS, USER_FIELD_NAMES)
    )
    with pytest.raises(PermanentFailure) as caught:
        RecipientDirectory(users).resolve(_request())
    assert caught.value.reason is Reason.OPTED_OUT


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_pause_and_keep_the_breaker_closed(
    http_server: FakeHttpServer, http: httpx.Client, status: int
) -> None:
    http_server.route("GET", PATH, Reply(status, {"error": "refused"}))
    users = UserServiceClient(http_server.url, http, "wrong", fail_max=2, reset_seconds=30)
    for _ in range(4):
        with pytest.raises(SystemicFailure) as caught:
            RecipientDirectory(users).resolve(_request())
        assert caught.value.reason is Reason.USER_SERVICE_UNAUTHORIZED
    assert users.breaker_state == "closed"
    assert [r.headers["Authorization"] for r in http_server.seen()] == ["Bearer wrong"] * 4
    record = {"email": "ada@example.com"}
    http_server.route("GET", PATH, _guarded("Authorization", f"Bearer {TOKEN}", record))
    fixed = UserServiceClient(http_server.url, http, TOKEN)
    assert RecipientDirectory(fixed).resolve(_request()).address == "ada@example.com"
