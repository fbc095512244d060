"""Unit tests of templates_client.transport: the hardened client (capped reading, envelopes and
answer classification: tests/unit/test_service_fetch.py; the SSRF policy:
tests/unit/test_url_policy.py)."""

from __future__ import annotations

from templates_client.transport import make_http_client


def test_make_http_client_is_hardened() -> None:
    with make_http_client(2.5, max_connections=3) as client:
        assert client.follow_redirects is False
        assert client.trust_env is False
        timeout = client.timeout
        assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2.5,) * 4
