"""Readiness: the cached TCP probe of the relay and the gating/non-gating split of /readyz."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Mapping

import pytest

from email_worker.ops.health import Answer, HealthServer, Readiness, TcpProbe


def test_tcp_probe_connects_at_most_once_per_interval() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    probe = TcpProbe("127.0.0.1", port, interval=3600, timeout=1)
    assert probe.reachable()
    listener.close()
    assert probe.reachable()  # cached: no new connection within the interval
    fresh = TcpProbe("127.0.0.1", port, interval=3600, timeout=1)
    assert not fresh.reachable()


def test_breakers_are_reported_but_do_not_gate() -> None:
    state = Readiness(
        {"broker": True, "database": True, "smtp": True}, {"template_service": "open"}
    )
    server = HealthServer("127.0.0.1", 0, lambda: state)
    try:
        code, body = server.ready_answer()
    finally:
        server.stop()
    assert code == 200 and body["status"] == "ready"
    assert body["breakers"] == {"template_service": "open"}


def test_any_failing_check_is_not_ready_and_named() -> None:
    state = Readiness({"broker": True, "database": True, "smtp": False})
    server = HealthServer("127.0.0.1", 0, lambda: state)
    try:
        code, body = server.ready_answer()
    finally:
        server.stop()
    assert code == 503 and body["checks"]["smtp"] is False


def test_a_readiness_check_that_raises_is_not_ready() -> None:
    def broken() -> Readiness:
        raise RuntimeError("boom")

    server = HealthServer("127.0.0.1", 0, broken)
    try:
        assert server.ready_answer()[0] == 503
    finally:
        server.stop()


def test_a_paused_consumer_is_not_ready_and_the_body_names_the_cause() -> None:
    paused = {"cause": "unroutable", "detail": "a retry or dead-letter copy came back"}
    state = Readiness(
        {"broker": True, "database": True, "smtp": True, "consumption": False},
        {"template_service": "closed"},
        paused=paused,
    )
    server = HealthServer("127.0.0.1", 0, lambda: state)
    try:
        code, body = server.ready_answer()
    finally:
        server.stop()
    assert code == 503 and body["paused"] == paused
    assert body["checks"]["consumption"] is False


def test_a_client_that_hangs_up_before_its_answer_costs_a_debug_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = threading.Event()

    def slow(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        closed.wait(10)
        return 200, b"x" * 4_000_000, "text/plain", {}  # more than any socket buffer holds

    server = HealthServer("127.0.0.1", 0, lambda: Readiness({}), routes={"/slow": slow}).start()
    caplog.set_level(logging.DEBUG, logger="email_worker.ops.health")
    try:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        # Reset, not a polite close: the server's write fails at once.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        closed.set()
        deadline = time.monotonic() + 10
        while "went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.stop()
    assert "an HTTP client went away before its answer" in caplog.text
    # socketserver's own handle_error prints this header and the traceback to stderr. (A log
    # handler another test left on a closed stream may print a "--- Logging error ---" block
    # there too: that is the test run's, not the server's.)
    assert "Exception occurred during processing of request" not in capsys.readouterr().err


def test_a_chunked_post_without_a_length_is_refused_with_411_unread() -> None:
    called: list[bytes] = []

    def route(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        called.append(body)
        return 200, b"", "text/plain", {}

    server = HealthServer("127.0.0.1", 0, lambda: Readiness({}), routes={"/hook": route}).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(
                b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
            )
            answer = client.makefile("rb").readline()
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.0 411") and called == []
