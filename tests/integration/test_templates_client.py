"""TemplateClient against a real HTTP server: answer shapes, cache, last-known-good copy and the
circuit breaker (CONTRACT section 5, RELIABILITY rule 17)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from schemas.failures import (
    DeferredFailure,
    PermanentFailure,
    Reason,
    SystemicFailure,
    TransientFailure,
)
from templates_client.client import TemplateClient
from templates_client.fields import parse_field_paths
from templates_client.template import TEMPLATE_FIELD_NAMES
from templates_client.transport import make_http_client
from tests.support.http import FakeHttpServer, Reply, Seen

pytestmark = pytest.mark.integration

PATH = "/api/v1/templates/welcome"
GOOD = {"subject": "Hi {{ name }}", "html_body": "<p>Hi {{ name }}</p>", "text_body": "Hi"}
BROKEN = Reply(500, {"success": False, "error": "boom"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with make_http_client(1.0) as client:
        yield client


def _client(
    server: FakeHttpServer,
    http: httpx.Client,
    *,
    fail_max: int = 3,
    reset_seconds: float = 30.0,
    cache_seconds: float = 60.0,
    max_bytes: int = 1_048_576,
    clock: Callable[[], float] = time.monotonic,
) -> TemplateClient:
    return TemplateClient(
        server.url + "/",  # a trailing slash must not double up in the path
        http,
        cache_seconds=cache_seconds,
        fail_max=fail_max,
        reset_seconds=reset_seconds,
        max_bytes=max_bytes,
        clock=clock,
    )


def test_bare_answer(http_server: FakeHttpServer, http: httpx.Client) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD | {"version": 7, "list_unsubscribe": "<u>"}))
    template = _client(http_server, http).get("welcome", None)
    assert (template.code, template.language, template.version) == ("welcome", None, "7")
    assert (template.subject, template.html, template.text) == (
        GOOD["subject"],
        GOOD["html_body"],
        "Hi",
    )
    assert template.list_unsubscribe == "<u>"
    [request] = http_server.seen("GET")
    assert request.path == PATH
    assert request.headers["Accept"] == "application/json"


def test_envelope_answer_and_content_hash_version(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    body = {"subject": "S", "html": "<b>x</b>", "text": "x"}
    http_server.route("GET", PATH, Reply(200, {"success": True, "data": body, "message": "ok"}))
    http_server.route("GET", "/api/v1/templates/other", Reply(200, body | {"subject": "T"}))
    client = _client(http_server, http)
    first = client.get("welcome", None)
    assert (first.subject, first.html, first.text) == ("S", "<b>x</b>", "x")
    assert first.version.startswith("sha256:")
    assert client.get("other", None).version != first.version


def test_plain_body_field_and_missing_text(http_server: FakeHttpServer, http: httpx.Client) -> None:
    http_server.route("GET", PATH, Reply(200, {"subject": "S", "body": "<p>b</p>"}))
    template = _client(http_server, http).get("welcome", None)
    assert (template.html, template.text) == ("<p>b</p>", None)


def test_language_is_passed_and_cached_separately(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD))
    client = _client(http_server, http)
    assert client.get("welcome", "fr").language == "fr"
    client.get("welcome", None)
    client.get("welcome", "fr")
    assert [r.path for r in http_server.seen("GET")] == [PATH + "?language=fr", PATH]


def test_fresh_copy_is_served_without_a_request(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route(
        "GET", PATH, Reply(200, GOOD | {"version": "1"}), Reply(200, GOOD | {"version": "2"})
    )
    clock = FakeClock()
    client = _client(http_server, http, cache_seconds=60, clock=clock)
    assert client.get("welcome", None).version == "1"
    clock.now += 59
    assert client.get("welcome", None).version == "1"
    assert len(http_server.seen("GET")) == 1
    clock.now += 2
    assert client.get("welcome", None).version == "2"
    assert len(http_server.seen("GET")) == 2


def test_404_is_permanent_and_never_opens_the_breaker(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    client = _client(http_server, http, fail_max=2)
    for _ in range(6):
        with pytest.raises(PermanentFailure) as caught:
            client.get("missing", None)
        assert caught.value.reason is Reason.TEMPLATE_NOT_FOUND
    assert client.breaker_state == "closed"
    assert len(http_server.seen("GET")) == 6


def test_404_drops_the_last_known_good_copy(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD), Reply(404), BROKEN)
    client = _client(http_server, http, cache_seconds=0)
    client.get("welcome", None)
    with pytest.raises(PermanentFailure):
        client.get("welcome", None)
    with pytest.raises(TransientFailure):  # no stale copy left to serve
        client.get("welcome", None)


def test_5xx_opens_the_breaker_then_no_request_is_made(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, BROKEN)
    client = _client(http_server, http, fail_max=3)
    for _ in range(3):  # the third call trips the breaker and still reports its own failure
        with pytest.raises(TransientFailure) as caught:
            client.get("welcome", None)
        assert not isinstance(caught.value, DeferredFailure)
        assert caught.value.reason is Reason.TEMPLATE_SERVICE_UNAVAILABLE
        assert "HTTP 500" in caught.value.detail
    assert client.breaker_state == "open"
    for _ in range(5):
        with pytest.raises(DeferredFailure) as deferred:
            client.get("welcome", None)
        assert deferred.value.reason is Reason.TEMPLATE_SERVICE_UNAVAILABLE
    assert len(http_server.seen("GET")) == 3


def test_last_known_good_is_served_while_failing_and_open(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD | {"version": "v1"}), BROKEN)
    client = _client(http_server, http, cache_seconds=0, fail_max=2)
    assert client.get("welcome", None).version == "v1"
    for _ in range(5):
        assert client.get("welcome", None).version == "v1"
    assert client.breaker_state == "open"
    assert len(http_server.seen("GET")) == 3  # one success, then fail_max failures
    with pytest.raises(DeferredFailure):  # another template has no copy to fall back on
        client.get("other", None)


def test_half_open_trial_recovers_or_reopens(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", PATH, BROKEN)
    client = _client(http_server, http, fail_max=2, reset_seconds=0.3)
    for _ in range(2):
        with pytest.raises(TransientFailure):
            client.get("welcome", None)
    time.sleep(0.35)
    with pytest.raises(TransientFailure):  # the trial call fails: open again at once
        client.get("welcome", None)
    assert client.breaker_state == "open"
    with pytest.raises(DeferredFailure):
        client.get("welcome", None)
    assert len(http_server.seen("GET")) == 3
    http_server.route("GET", PATH, Reply(200, GOOD))
    time.sleep(0.35)
    assert client.get("welcome", None).subject == GOOD["subject"]
    assert client.breaker_state == "closed"


def test_timeout_is_transient(http_server: FakeHttpServer) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD, delay=0.6))
    with make_http_client(0.2) as http:
        started = time.monotonic()
        with pytest.raises(TransientFailure) as caught:
            _client(http_server, http).get("welcome", None)
        assert time.monotonic() - started < 0.55
    assert "timeout" in caught.value.detail


def test_refused_connection_is_transient(http: httpx.Client) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TemplateClient(f"http://127.0.0.1:{port}", http)
    with pytest.raises(TransientFailure) as caught:
        client.get("welcome", None)
    assert "connection failed" in caught.value.detail


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (Reply(200, "<html>oops</html>"), "not usable JSON"),
        (Reply(200, {"success": True, "data": {"html": "<p>x</p>"}}), "no subject"),
        (Reply(200, {"subject": "S", "html_body": 7}), "no body"),
        (Reply(200, {"subject": "S", "html": "x" * 5000}), "too large"),
        (Reply(200, "[" * 400 + "]" * 400), "nesting is deeper than 32"),
        (Reply(200, '{"subject": "\\udc00", "html": "x"}'), "lone surrogate"),
        (Reply(200, {"success": False, "data": {"subject": "S", "html": "x"}}), "success=false"),
    ],
)
def test_answers_that_are_no_template_are_permanent_and_leave_the_breaker_closed(
    http_server: FakeHttpServer, http: httpx.Client, reply: Reply, detail: str
) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD), reply)
    client = _client(http_server, http, fail_max=2, max_bytes=1024, cache_seconds=0)
    client.get("welcome", None)
    for _ in range(4):
        with pytest.raises(PermanentFailure) as caught:
            client.get("welcome", None)  # no last-known-good copy served: it is dropped
        assert caught.value.reason is Reason.TEMPLATE_INVALID
        assert detail in caught.value.detail
    assert client.breaker_state == "closed"
    assert len(http_server.seen("GET", PATH)) == 5


@pytest.mark.parametrize("status", [400, 405, 410, 422])
def test_other_4xx_are_permanent_template_errors(
    http_server: FakeHttpServer, http: httpx.Client, status: int
) -> None:
    http_server.route("GET", PATH, Reply(status, {"error": "no"}))
    client = _client(http_server, http, fail_max=2)
    for _ in range(3):
        with pytest.raises(PermanentFailure) as caught:
            client.get("welcome", None)
        assert caught.value.reason is Reason.TEMPLATE_ERROR
        assert f"HTTP {status}" in caught.value.detail
    assert client.breaker_state == "closed"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(408),
        Reply(425),
        Reply(429, headers={"Retry-After": "1"}),
        Reply(302, headers={"Location": "/api/v1/templates/elsewhere"}),
    ],
)
def test_transient_statuses_count_against_the_breaker(
    http_server: FakeHttpServer, http: httpx.Client, reply: Reply
) -> None:
    http_server.route("GET", PATH, reply)
    client = _client(http_server, http, fail_max=2)
    for _ in range(2):
        with pytest.raises(TransientFailure) as caught:
            client.get("welcome", None)
        assert not isinstance(caught.value, DeferredFailure)
    assert client.breaker_state == "open"
    assert [r.path for r in http_server.seen()] == [PATH, PATH]  # redirects not followed


TOKEN = "tmpl-t0ken"


def _guarded(good: Reply, refused: int = 401) -> Callable[[Seen], Reply]:
    """A template service that checks the bearer token strictly, as a real one does."""

    def answer(request: Seen) -> Reply:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Reply(refused, {"success": False, "error": "unauthorized"})
        return good

    return answer


CONTRACT_SHAPE = {"data": {"name": "Welcome to {{name}}", "content": "<h1>Hi</h1>", "version": 1}}
CONTRACT_FIELDS = "subject=data.name,html=data.content,text=data.plain,version=data.version"


def test_contract_shape_with_template_fields_path_and_token(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    path = "/templates/pt-BR/a%2Fb"
    http_server.route("GET", path, _guarded(Reply(200, CONTRACT_SHAPE)))
    client = TemplateClient(
        http_server.url,
        http,
        path="/templates/{language}/{template_code}",
        token=TOKEN,
        fields=parse_field_paths(CONTRACT_FIELDS, TEMPLATE_FIELD_NAMES),
    )
    template = client.get("a/b", "pt-BR")
    assert (template.subject, template.html, template.text, template.version) == (
        "Welcome to {{name}}",
        "<h1>Hi</h1>",
        None,
        "1",
    )
    assert [r.path for r in http_server.seen()] == [path]  # no ?language= when the path has it


def test_language_query_joins_a_path_that_has_a_query(
    http_server: FakeHttpServer, http: httpx.Client
) -> None:
    http_server.route("GET", "/t", Reply(200, GOOD))
    client = TemplateClient(http_server.url, http, path="/t?code={template_code}")
    client.get("welcome", "fr")
    client.get("welcome", None)
    assert [r.path for r in http_server.seen()] == [
        "/t?code=welcome&language=fr",
        "/t?code=welcome",
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_pauses_without_opening_the_breaker_or_serving_old_copies(
    http_server: FakeHttpServer, http: httpx.Client, status: int
) -> None:
    http_server.route("GET", PATH, Reply(200, GOOD), _guarded(Reply(200, GOOD), refused=status))
    wrong = TemplateClient(http_server.url, http, token="wrong", fail_max=2, cache_seconds=0)
    wrong.get("welcome", None)  # the first answer ignores the token: a good copy is cached
    for _ in range(4):
        with pytest.raises(SystemicFailure) as caught:
            wrong.get("welcome", None)
        assert caught.value.reason is Reason.TEMPLATE_SERVICE_UNAUTHORIZED
        assert f"HTTP {status}" in caught.value.detail
    assert wrong.breaker_state == "closed"
    assert [r.headers["Authorization"] for r in http_server.seen()] == ["Bearer wrong"] * 5
    right = TemplateClient(http_server.url, http, token=TOKEN)
    assert right.get("welcome", None).subject == GOOD["subject"]


def test_slow_calls_run_in_parallel(http_server: FakeHttpServer, http: httpx.Client) -> None:
    codes = [f"t{i}" for i in range(5)]
    for code in codes:
        http_server.route("GET", f"/api/v1/templates/{code}", Reply(200, GOOD, delay=0.4))
    client = _client(http_server, http)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda c=code: results.append(client.get(c, None).code))
        for code in codes
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == codes
    assert time.monotonic() - started < 1.4  # serialised behind the breaker it would take 2 s
