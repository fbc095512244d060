"""One POST to a provider's API over a hardened ``httpx`` client, and what a failed exchange
means for the message (CONTRACT section 16, RELIABILITY rules 10 and 15).

The client (``templates_client.transport.make_http_client``) never follows redirects, ignores
proxy and certificate settings from the environment, verifies TLS and bounds connecting, each
write, each read and the wait for a pooled connection by ``timeout``; answers are read up to
``MAX_ANSWER_BYTES``. What went wrong decides whether the provider may hold the message:

    no pooled connection in time        DeferredFailure(SMTP_UNAVAILABLE)  nothing sent, no attempt
    connect refused, reset or timed out RelayUnavailable(SMTP_UNAVAILABLE)  next relay at once
    certificate not verified            SystemicFailure(SMTP_TLS_FAILED)    next relay, pauses
    the request not written whole       RelayUnavailable                    next relay at once
    no answer, or the connection lost,  AmbiguousDelivery(SMTP_UNKNOWN)     never another relay:
      after the request was sent                                            recorded ``unknown``

httpcore reads an answer even after a failed write (a server may refuse early), so a write
failure surfaces as a write error only when no answer followed; a connection lost after it is
ambiguous, as after any sent request. The window after the request left cannot be closed, only
detected, as after the final dot of SMTP's DATA. A status line read is an answer: an
unreadable body after it changes nothing (``Answer.body`` is then empty).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from schemas.failures import (
    AmbiguousDelivery,
    DeferredFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
    TransientFailure,
    WorkerFailure,
)
from schemas.strict_json import loads_strict
from templates_client.fetch import ResponseTooLarge, read_capped
from templates_client.transport import make_http_client

MAX_ANSWER_BYTES = 64 * 1024  # the providers answer a send with a few hundred bytes


@dataclass(frozen=True)
class Answer:
    """The provider's answer: status, headers (case-insensitive) and body (capped)."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The body as strict JSON (``schemas.strict_json``), or None when it is not."""
        if not self.body:
            return None
        try:
            return loads_strict(self.body)
        except WorkerFailure:
            return None


class ProviderHttp:
    """Thread-safe keep-alive connections to one API base URL, at most ``max_connections``."""

    def __init__(self, base_url: str, *, timeout: float, max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = make_http_client(timeout, max_connections=max_connections)

    def post(self, path: str, **request: Any) -> Answer:
        """POST ``base_url + path`` with httpx's ``request`` arguments (``content``, ``data``,
        ``files``, ``headers``, ``auth``); the answer, whatever its status. Raises only the
        failures of the module docstring."""
        try:
            with self._client.stream("POST", self.base_url + path, **request) as response:
                return Answer(response.status_code, response.headers, _body(response))
        except httpx.HTTPError as exc:
            raise exchange_failure(exc) from None

    def close(self) -> None:
        self._client.close()


def _body(response: httpx.Response) -> bytes:
    """The body up to the cap; empty when it is larger or could not be read (the status was
    read: the answer stands)."""
    try:
        return read_capped(response, MAX_ANSWER_BYTES)
    except (ResponseTooLarge, httpx.HTTPError):
        return b""


def exchange_failure(error: httpx.HTTPError) -> WorkerFailure:
    """What a failed exchange means (the table in the module docstring)."""
    name = type(error).__name__
    if isinstance(error, httpx.PoolTimeout):
        return DeferredFailure(Reason.SMTP_UNAVAILABLE, "no free connection to the API in time")
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        if _certificate_refused(error):
            return SystemicFailure(Reason.SMTP_TLS_FAILED, "certificate verification failed")
        return RelayUnavailable(Reason.SMTP_UNAVAILABLE, f"connect failed: {name}")
    if isinstance(error, httpx.WriteError | httpx.WriteTimeout):
        return RelayUnavailable(Reason.SMTP_UNAVAILABLE, f"request not sent whole: {name}")
    if isinstance(error, httpx.ReadError | httpx.ReadTimeout | httpx.RemoteProtocolError):
        return AmbiguousDelivery(Reason.SMTP_UNKNOWN, f"no answer after the request: {name}")
    # A local protocol error, an unsupported URL: our side, before anything was sent.
    return TransientFailure(Reason.INTERNAL_ERROR, f"HTTP client: {name}")


def _certificate_refused(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(8):  # the causes httpx and httpcore chain, not forever
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
