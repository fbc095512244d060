"""Outbound HTTP for the worker (RELIABILITY rules 15 and 17): the hardened ``httpx.Client``.
Calling a service and classifying its answer is ``templates_client.fetch``; the SSRF policy for
URLs that arrive inside messages is ``email_worker.callbacks.url_policy`` (the services' own
URLs come from the operator).
"""

from __future__ import annotations

import httpx


def make_http_client(timeout: float, *, max_connections: int = 20) -> httpx.Client:
    """A thread-safe keep-alive client that never follows redirects, ignores proxy and
    certificate settings from the environment (``trust_env=False``) and verifies TLS.

    ``timeout`` bounds connecting, each read, each write and waiting for a pooled connection;
    httpx has no total deadline, so callers also cap the body size
    (``templates_client.fetch.read_capped``)."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "email-worker", "Accept": "application/json"},
    )


# The client type for those who hold one without importing httpx themselves.
HttpClient = httpx.Client
