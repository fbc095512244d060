"""SmtpMailer against a real aiosmtpd server: delivery, pooling, TLS, auth, classification."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from email_worker.config import SmtpSecurity
from email_worker.message_ids import message_id_for
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.smtp.mailer import SmtpMailer
from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    ThrottledFailure,
    TransientFailure,
    WorkerFailure,
)
from tests.support.smtp import (  # noqa: F401 - fixtures, registered by importing them
    Behaviour,
    SelfSignedCert,
    SmtpTestServer,
    smtp_cert_fixture,
    smtp_server_factory_fixture,
)

pytestmark = pytest.mark.integration

SENDER = "Acme <notify@acme.test>"
RECIPIENT = "ann@example.test"
Factory = Callable[..., SmtpTestServer]
SMTP_TRANSIENT, RCPT_REJECTED = Reason.SMTP_TRANSIENT, Reason.RECIPIENT_REJECTED
MESSAGE_REJECTED, RCPT_550, END = Reason.MESSAGE_REJECTED, "550 5.1.1 at RCPT", "end of DATA"
THROTTLED = Reason.THROTTLED


def _email(request_id: str = "req-1", recipient: str = RECIPIENT) -> OutgoingEmail:
    content = RenderedEmail(
        subject="Welcome, Ann ✓",
        html="<p>Hello <b>Ann</b></p>\n.a line starting with a dot",
        text="Hello Ann\n.a line starting with a dot",
        template_code="welcome",
        template_version="v1",
        list_unsubscribe="<https://acme.test/u/1>",
    )
    message_id = message_id_for(request_id, b"secret", "acme.test")
    return OutgoingEmail(SENDER, recipient, message_id, content)


def _mailer(
    server: SmtpTestServer,
    security: SmtpSecurity = SmtpSecurity.NONE,
    *,
    ca_file: Path | None = None,
    credentials: tuple[str, str] | None = None,
    timeout: float = 5.0,
    max_connections: int = 8,
    connection_wait: float | None = None,
) -> SmtpMailer:
    username, password = credentials or (None, None)
    return SmtpMailer(
        server.host,
        server.port,
        security=security,
        username=username,
        password=password,
        timeout=timeout,
        ca_file=ca_file,
        local_hostname="worker.test",
        max_connections=max_connections,
        connection_wait=connection_wait,
    )


@pytest.fixture(name="smtp_server", params=[True, False], ids=["pipelining", "stepwise"])
def relay(request: pytest.FixtureRequest) -> Iterator[SmtpTestServer]:
    """Every test here runs against a relay that offers PIPELINING and one that does not."""
    with SmtpTestServer(pipelining=request.param) as server:
        yield server


@pytest.fixture
def mailer(smtp_server: SmtpTestServer) -> Iterator[SmtpMailer]:
    mailer = _mailer(smtp_server)
    yield mailer
    mailer.close()


def _failure(mailer: SmtpMailer, email: OutgoingEmail | None = None) -> WorkerFailure:
    with pytest.raises(WorkerFailure) as caught:
        mailer.send(email or _email())
    return caught.value


def test_delivers_multipart_alternative_with_all_headers(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    reply = mailer.send(_email())

    assert reply.startswith("250 2.0.0")
    [received] = smtp_server.messages
    assert received.mail_from == "notify@acme.test"
    assert received.rcpt_tos == (RECIPIENT,)
    message = received.parsed()
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert (
        text.get_content().replace("\r\n", "\n").rstrip()
        == "Hello Ann\n.a line starting with a dot"
    )
    assert "<b>Ann</b>" in html.get_content()
    assert received.message_id == _email().message_id
    assert message["Subject"] == "Welcome, Ann ✓"
    assert message["To"] == RECIPIENT and message["From"] == SENDER
    assert message["List-Unsubscribe"] == "<https://acme.test/u/1>"
    assert message["Date"] is not None


def test_one_connection_is_reused_across_sends(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    for n in range(3):
        mailer.send(_email(f"req-{n}"))

    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 1


def test_concurrent_sends_use_separate_connections(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    smtp_server.enqueue(Behaviour(delay=0.2), Behaviour(delay=0.2))  # the two overlap
    threads = [threading.Thread(target=mailer.send, args=(_email(f"r{n}"),)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


def test_more_threads_than_connections_share_the_pool(smtp_server: SmtpTestServer) -> None:
    smtp_server.enqueue(*[Behaviour(delay=0.2)] * 6)  # every transaction holds its connection
    mailer = _mailer(smtp_server, max_connections=2)
    replies: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: replies.append(mailer.send(_email(f"r{n}"))))
        for n in range(6)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while mailer.pool_counts().waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    during = mailer.pool_counts()
    for thread in threads:
        thread.join()
    after = mailer.pool_counts()
    mailer.close()

    assert len(replies) == 6 and len(smtp_server.messages) == 6
    assert smtp_server.connections == 2
    assert during.waiting >= 1 and during.busy + during.idle <= 2
    assert (after.busy, after.idle, after.waiting) == (0, 2, 0)


def test_no_connection_free_in_time_defers_without_sending(smtp_server: SmtpTestServer) -> None:
    smtp_server.enqueue(Behaviour(delay=1.5))  # the first transaction holds the only connection
    mailer = _mailer(smtp_server, max_connections=1, connection_wait=0.3)
    first = threading.Thread(target=mailer.send, args=(_email("held"),))
    first.start()
    deadline = time.monotonic() + 5
    while smtp_server.data_transactions == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()

    failure = _failure(mailer, _email("waiting"))

    waited = time.monotonic() - started
    first.join()
    assert type(failure) is DeferredFailure and failure.reason is Reason.SMTP_UNAVAILABLE
    assert "no SMTP connection free within 0.3 s" in failure.detail
    assert 0.25 < waited < 1.4  # gave up before the held connection came back
    assert [m.message_id for m in smtp_server.messages] == [_email("held").message_id]
    mailer.send(_email("later"))  # the connection is free again, and reused
    mailer.close()
    assert len(smtp_server.messages) == 2 and smtp_server.connections == 1


@pytest.mark.parametrize(
    ("behaviour", "kind", "reason", "detail"),
    [
        (Behaviour(rcpt="451 4.3.0 x"), TransientFailure, SMTP_TRANSIENT, "451 4.3.0 at RCPT"),
        (Behaviour(rcpt="452 4.5.3 x"), TransientFailure, SMTP_TRANSIENT, "452 4.5.3 at RCPT"),
        # Throttling (CONTRACT 12): deferred without an attempt (tests/unit/test_smtp_throttle.py).
        (Behaviour(rcpt="421 4.7.0 x"), ThrottledFailure, THROTTLED, "421 4.7.0 at RCPT"),
        (Behaviour(rcpt=f"550 5.1.1 <{RECIPIENT}>"), PermanentFailure, RCPT_REJECTED, RCPT_550),
        (Behaviour(data="554 5.6.0 x"), PermanentFailure, MESSAGE_REJECTED, "554 5.6.0 at " + END),
        (Behaviour(data="451 4.7.1 x"), ThrottledFailure, THROTTLED, "451 4.7.1 at " + END),
    ],
)
def test_replies_are_classified_by_code_and_phase(
    mailer: SmtpMailer,
    smtp_server: SmtpTestServer,
    behaviour: Behaviour,
    kind: type[WorkerFailure],
    reason: Reason,
    detail: str,
) -> None:
    smtp_server.script(RECIPIENT, behaviour)

    failure = _failure(mailer)

    assert type(failure) is kind
    assert (failure.reason, failure.detail) == (reason, detail)
    assert "ann" not in failure.detail
    assert smtp_server.messages == []
    mailer.send(_email())  # the failed connection was dropped; a fresh one works
    assert smtp_server.connections == 2


def test_connection_dropped_after_the_final_dot_is_ambiguous(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    smtp_server.enqueue(Behaviour(drop=True))

    failure = _failure(mailer)

    assert isinstance(failure, AmbiguousDelivery)
    assert failure.reason is Reason.SMTP_UNKNOWN
    [received] = smtp_server.messages  # the relay did get it: exactly why this is "unknown"
    assert received.ambiguous and received.message_id == _email().message_id


def test_timeout_waiting_for_the_final_reply_is_ambiguous(smtp_server: SmtpTestServer) -> None:
    smtp_server.enqueue(Behaviour(delay=2.0))
    mailer = _mailer(smtp_server, timeout=0.5)

    failure = _failure(mailer)

    assert isinstance(failure, AmbiguousDelivery)
    mailer.close()


def test_refused_connection_is_transient_and_fast() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = SmtpMailer(
        "127.0.0.1", port, security=SmtpSecurity.NONE, username=None, password=None, timeout=2
    )
    started = time.monotonic()

    failure = _failure(mailer)

    assert type(failure) is RelayUnavailable  # nothing accepted: another relay may take it
    assert failure.reason is Reason.SMTP_UNAVAILABLE
    assert time.monotonic() - started < 3.0


def test_server_restart_between_sends_reconnects_transparently(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    mailer.send(_email("req-1"))
    smtp_server.restart()  # the pooled connection is now dead

    mailer.send(_email("req-2"))

    assert [m.message_id for m in smtp_server.messages] == [
        _email("req-1").message_id,
        _email("req-2").message_id,
    ]


def test_relay_restart_with_several_idle_connections_costs_no_send(
    smtp_server: SmtpTestServer,
) -> None:
    mailer = _mailer(smtp_server)
    smtp_server.enqueue(*[Behaviour(delay=0.2)] * 3)  # three overlapping sends: three connections
    threads = [threading.Thread(target=mailer.send, args=(_email(f"w{n}"),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert smtp_server.connections == 3
    smtp_server.restart()  # every idle connection is now dead

    for n in range(3):
        mailer.send(_email(f"after-{n}"))
    mailer.close()

    assert len(smtp_server.messages) == 6


@pytest.mark.parametrize(
    ("tls", "security"), [("starttls", SmtpSecurity.STARTTLS), ("tls", SmtpSecurity.TLS)]
)
def test_verified_tls_with_auth_delivers(
    smtp_server_factory: Factory, smtp_cert: SelfSignedCert, tls: str, security: SmtpSecurity
) -> None:
    server = smtp_server_factory(tls=tls, cert=smtp_cert, credentials=("user", "pass"))
    mailer = _mailer(server, security, ca_file=smtp_cert.cert, credentials=("user", "pass"))

    mailer.send(_email())
    mailer.send(_email("req-2"))

    assert len(server.messages) == 2 and server.connections == 1
    mailer.close()


@pytest.mark.parametrize(
    ("tls", "security"), [("starttls", SmtpSecurity.STARTTLS), ("tls", SmtpSecurity.TLS)]
)
def test_untrusted_certificate_is_systemic(
    smtp_server_factory: Factory, smtp_cert: SelfSignedCert, tls: str, security: SmtpSecurity
) -> None:
    server = smtp_server_factory(tls=tls, cert=smtp_cert)
    mailer = _mailer(server, security)  # system trust store: the self-signed cert is unknown

    failure = _failure(mailer)

    assert isinstance(failure, SystemicFailure)
    assert (failure.reason, failure.detail) == (
        Reason.SMTP_TLS_FAILED,
        "certificate verification failed",
    )
    assert server.messages == []


def test_starttls_required_but_not_offered_is_systemic(smtp_server: SmtpTestServer) -> None:
    mailer = _mailer(smtp_server, SmtpSecurity.STARTTLS)

    failure = _failure(mailer)

    assert isinstance(failure, SystemicFailure) and failure.reason is Reason.SMTP_TLS_FAILED


def test_wrong_credentials_are_systemic(
    smtp_server_factory: Factory, smtp_cert: SelfSignedCert
) -> None:
    server = smtp_server_factory(tls="starttls", cert=smtp_cert, credentials=("user", "pass"))
    mailer = _mailer(
        server, SmtpSecurity.STARTTLS, ca_file=smtp_cert.cert, credentials=("user", "wrong")
    )

    failure = _failure(mailer)

    assert isinstance(failure, SystemicFailure)
    assert (failure.reason, failure.detail) == (Reason.SMTP_AUTH_FAILED, "535 at AUTH")
    assert "wrong" not in str(failure)


def test_missing_credentials_when_relay_requires_auth_is_systemic(
    smtp_server_factory: Factory,
) -> None:
    server = smtp_server_factory(credentials=("user", "pass"))

    failure = _failure(_mailer(server))

    assert isinstance(failure, SystemicFailure)
    assert (failure.reason, failure.detail) == (Reason.SMTP_AUTH_FAILED, "530 5.7.0 at MAIL")


def test_unsafe_header_fails_before_any_connection(
    mailer: SmtpMailer, smtp_server: SmtpTestServer
) -> None:
    email = _email(recipient="ann@example.test\r\nBcc: evil@x.test")

    failure = _failure(mailer, email)

    assert failure.reason is Reason.UNSAFE_CONTENT
    assert smtp_server.connections == 0


def _pipelining_relay(listener: socket.socket, log: list[bytes]) -> None:
    """A relay that answers MAIL only once RCPT and DATA have arrived too: a client that
    waits for each reply before the next command would hang here until its timeout."""
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as lines:
        conn.sendall(b"220 relay.test ESMTP\r\n")
        log.append(lines.readline())  # EHLO
        conn.sendall(b"250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        log.extend(lines.readline() for _ in range(3))  # MAIL, RCPT, DATA, unanswered so far
        conn.sendall(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
        while lines.readline() not in (b".\r\n", b""):  # the body, up to the final dot
            pass
        conn.sendall(b"250 2.0.0 queued\r\n")
        log.append(lines.readline())  # QUIT, or b"" when the client just closes
        conn.sendall(b"221 bye\r\n")


def test_commands_are_pipelined_when_the_relay_offers_it() -> None:
    log: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        relay = threading.Thread(target=_pipelining_relay, args=(listener, log), daemon=True)
        relay.start()
        port = listener.getsockname()[1]
        mailer = SmtpMailer(
            "127.0.0.1", port, security=SmtpSecurity.NONE, username=None, password=None, timeout=2
        )

        reply = mailer.send(_email())
        mailer.close()
        relay.join(timeout=5)

    assert reply == "250 2.0.0 queued"
    assert log[1:4] == [
        b"MAIL FROM:<notify@acme.test>\r\n",
        f"RCPT TO:<{RECIPIENT}>\r\n".encode(),
        b"DATA\r\n",
    ]
