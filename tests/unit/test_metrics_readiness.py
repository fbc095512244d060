"""Readiness: the cached TCP probe of the relay and the gating/non-gating split of /readyz."""

from __future__ import annotations

import socket

from email_worker.ops.health import HealthServer, Readiness, TcpProbe


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
