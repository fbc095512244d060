"""The callback POST client against real HTTP(S) servers on loopback: keep-alive, a connection
closed while idle, verified TLS, no redirects, bounded answers, clear errors."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest

from email_worker.callbacks.sender import CallbackHttp, NoAnswer
from tests.support.certs import SelfSignedCert
from tests.support.http import KeepAliveGateway

pytestmark = pytest.mark.integration

BODY = b'{"status": "delivered"}'


@pytest.fixture
def http() -> Iterator[CallbackHttp]:
    client = CallbackHttp(2.0)
    yield client
    client.close()


@pytest.fixture
def gateway() -> Iterator[KeepAliveGateway]:
    server = KeepAliveGateway()
    yield server
    server.stop()


def test_posts_share_one_kept_alive_connection(
    gateway: KeepAliveGateway, http: CallbackHttp
) -> None:
    answers = [http.post(gateway.url("/ok"), BODY, {"webhook-id": "w"}) for _ in range(5)]
    assert {(a.status, a.retry_after) for a in answers} == {(200, "7")}
    assert gateway.bodies == [BODY] * 5
    assert gateway.connections == 1


def test_a_connection_closed_while_idle_is_replaced_and_the_post_sent_once(
    gateway: KeepAliveGateway, http: CallbackHttp
) -> None:
    assert http.post(gateway.url("/close"), BODY, {}).status == 200
    assert http.post(gateway.url("/ok"), BODY, {}).status == 200
    assert gateway.connections == 2
    assert len(gateway.bodies) == 2


def test_a_redirect_is_an_answer_not_followed(
    gateway: KeepAliveGateway, http: CallbackHttp
) -> None:
    assert http.post(gateway.url("/moved"), BODY, {}).status == 302
    assert len(gateway.bodies) == 1


def test_refused_connection_and_bad_urls_are_named() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = CallbackHttp(1.0)
    cases = {
        f"http://127.0.0.1:{port}/cb": "ConnectError",
        "ftp://127.0.0.1/cb": "InvalidURL",
        "http://127.0.0.1:99999/cb": "InvalidURL",
        "http:///cb": "InvalidURL",
    }
    for url, name in cases.items():
        with pytest.raises(NoAnswer) as caught:
            http.post(url, BODY, {})
        assert str(caught.value) == name, url


def test_a_header_with_a_line_break_is_refused_before_sending(gateway: KeepAliveGateway) -> None:
    with pytest.raises(NoAnswer, match="NetworkError"):
        CallbackHttp(1.0).post(gateway.url("/ok"), BODY, {"webhook-id": "a\r\nX-Evil: 1"})
    assert gateway.bodies == []


def test_a_silent_server_is_a_read_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (in the backlog) and never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cb"
        with pytest.raises(NoAnswer, match="ReadTimeout"):
            CallbackHttp(0.3).post(url, BODY, {})


def test_tls_is_verified(smtp_cert: SelfSignedCert) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(smtp_cert.cert, smtp_cert.key)
    server = KeepAliveGateway(tls=context)
    try:
        with pytest.raises(NoAnswer, match="ConnectError"):  # not signed by a trusted CA
            CallbackHttp(2.0).post(server.url("/ok", "https"), BODY, {})
        trusting = CallbackHttp(2.0, tls=ssl.create_default_context(cafile=str(smtp_cert.cert)))
        assert trusting.post(server.url("/ok", "https"), BODY, {}).status == 200
        assert server.bodies == [BODY]
        trusting.close()
    finally:
        with contextlib.suppress(OSError):
            server.shutdown()
            server.server_close()
