"""SSRF where the callback sender connects (RELIABILITY rule 15), against real listeners on
loopback: an allow-listed name that resolves to an internal address reaches nothing, every
resolved address is checked, and the name connected to is the name that was checked."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from email_worker.app.build import callback_sender
from email_worker.callbacks.sender import CallbackHttp, NoAnswer
from email_worker.callbacks.url_policy import UrlPolicy
from email_worker.config import Settings
from tests.support.http import FakeHttpServer, Reply

pytestmark = pytest.mark.integration

BODY = b'{"status": "delivered"}'
_REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def listener() -> Iterator[FakeHttpServer]:
    server = FakeHttpServer().start()
    server.route("POST", "/hook", Reply(200, {"ok": True}))
    try:
        yield server
    finally:
        server.stop()


def port_of(server: FakeHttpServer) -> int:
    return int(server.url.rpartition(":")[2])


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> list[str]:
    """Make ``names`` resolve to the given addresses, the way the C resolver is asked: a
    non-ASCII name reaches it through Python's IDNA 2003 codec (``straße.de`` → ``strasse.de``).
    Returns the names asked for. Addresses and other names go to the real resolver."""
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host if not isinstance(host, str) or host.isascii() else host.encode("idna").decode()
        if name not in names:
            return _REAL_GETADDRINFO(host, port, *args, **kwargs)
        asked.append(name)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in names[name]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def sender(allowed: list[str], trusted: list[str] | None = None) -> CallbackHttp:
    return CallbackHttp(2.0, policy=UrlPolicy(allowed, trusted or []))


def refusal(post: Callable[[], object]) -> str:
    with pytest.raises(NoAnswer) as caught:
        post()
    return str(caught.value)


def test_an_allow_listed_name_that_resolves_to_loopback_reaches_nothing(
    listener: FakeHttpServer,
) -> None:
    url = f"http://localhost:{port_of(listener)}/hook"  # /etc/hosts: 127.0.0.1

    assert refusal(lambda: sender(["localhost"]).post(url, BODY, {})) == "AddressNotAllowed"
    assert listener.seen() == []
    # Listing the exact address is the operator's explicit choice: then it is used.
    assert sender(["localhost", "127.0.0.1"]).post(url, BODY, {}).status == 200
    assert len(listener.seen("POST", "/hook")) == 1


def test_every_resolved_address_is_checked_not_only_the_first(
    listener: FakeHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"rebind.example.com": ["93.184.216.34", "127.0.0.1"]})
    url = f"http://rebind.example.com:{port_of(listener)}/hook"

    assert refusal(lambda: sender(["*.example.com"]).post(url, BODY, {})) == "AddressNotAllowed"
    assert listener.seen() == []


def test_the_name_connected_to_is_the_name_checked(
    listener: FakeHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read with IDNA 2003, as the socket module reads it, "straße.de" is "strasse.de": another
    # domain (here 127.0.0.2, where nothing listens).
    asked = fake_dns(monkeypatch, {"xn--strae-oqa.de": ["127.0.0.1"], "strasse.de": ["127.0.0.2"]})
    port = port_of(listener)

    answer = sender(["straße.de", "127.0.0.1"]).post(f"http://straße.de:{port}/hook", BODY, {})

    assert answer.status == 200
    assert asked == ["xn--strae-oqa.de"]  # IDNA 2008, as checked; never "strasse.de"
    (seen,) = listener.seen("POST", "/hook")
    assert seen.headers["Host"] == f"xn--strae-oqa.de:{port}"


def test_the_operators_own_callback_origin_is_trusted(listener: FakeHttpServer) -> None:
    settings = Settings(callback_url=f"{listener.url}/api/v1/email/status/")
    http = callback_sender(settings)

    assert http.post(f"{listener.url}/hook", BODY, {}).status == 200  # same origin: internal OK
    other = f"http://localhost:{port_of(listener)}/hook"  # another origin, not allow-listed
    assert refusal(lambda: http.post(other, BODY, {})) == "HostNotAllowed"


def test_a_name_that_does_not_resolve_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"gone.example.com": []})

    post = sender(["gone.example.com"]).post
    assert refusal(lambda: post("https://gone.example.com/hook", BODY, {})) == "NameNotResolved"
