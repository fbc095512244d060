"""The status callback POST: ``email_worker.callbacks.sender.CallbackHttp`` (``http.client``)
against an ``httpx.Client`` set up the same way, posting the same signed body with the same
headers over one kept-alive connection to a local HTTP/1.1 server.

The server is ``benchmarks.http_services.HttpServices`` (the throughput benchmark's callback
receiver: asyncio, keep-alive, parses each JSON body) in a child process, so the CPU measured
here (``process_time`` of this process) is the client's alone. The httpx client has what
``CallbackHttp`` has: a timeout on connecting and on every read, no redirects followed, no proxy
or certificates from the environment (``trust_env=False``), kept-alive connections (the limits
of ``templates_client.transport``), and an answer read up to 64 KB at most (streamed, the
connection dropped past that). Plain HTTP on loopback: TLS would add the same record-layer cost
to both.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

import httpx

from benchmarks.http_services import HttpServices
from benchmarks.micro.timing import Comparison, Side, measure_pair
from email_worker.callbacks.sender import CallbackHttp
from email_worker.callbacks.shape import CallbackEvent, CallbackShape
from email_worker.callbacks.signing import sign_with_key, signing_key
from schemas.callback import CallbackStatus

PART = "callback_http"
TIMEOUT = 10.0
MAX_ANSWER_BYTES = 64 * 1024
_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example key


def callback() -> tuple[bytes, dict[str, str]]:
    """A ``delivered`` callback body as the dispatcher sends it, and its signed headers."""
    event = CallbackEvent(
        notification_id="n-3c1e9b2a-7f6d-4e58-a0b1-c2d3e4f50617",
        request_id="req-3c1e9b2a-7f6d-4e58-a0b1-c2d3e4f50617",
        correlation_id="corr-9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
        status=CallbackStatus.DELIVERED,
        timestamp="2026-12-07T19:04:23.417Z",
        error=None,
        attempts=1,
    )
    body = CallbackShape().body(event)
    webhook_id, timestamp = "msg_2b1c8f0e9d7a4c3b8e6f5a4d3c2b1a09", 1796670263
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "email-worker/0.1.0",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_with_key(signing_key(_SECRET), webhook_id, timestamp, body),
    }
    return body, headers


def _serve(control: Connection) -> None:
    """The child process: serve until told to stop; answer "count" with the callbacks seen."""
    services = HttpServices().start()
    control.send(services.callback_url)
    try:
        while (command := control.recv()) != "stop":
            if command == "count":
                control.send(len(services.callbacks.arrivals))
    finally:
        services.stop()


class Receiver:
    """The callback receiver in a child process (``with Receiver() as receiver``)."""

    def __init__(self) -> None:
        self._control, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child,), name="bench-micro-receiver", daemon=True
        )
        self._process.start()
        if not self._control.poll(30):
            self.close()
            raise RuntimeError("the callback receiver did not start within 30 s")
        self.url: str = self._control.recv()

    def received(self) -> int:
        self._control.send("count")
        return int(self._control.recv())

    def close(self) -> None:
        if self._process.is_alive():
            self._control.send("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def httpx_client() -> httpx.Client:
    """An httpx client with ``CallbackHttp``'s rules."""
    return httpx.Client(
        timeout=httpx.Timeout(TIMEOUT),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=30),
        follow_redirects=False,
        trust_env=False,
    )


def httpx_post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST through httpx, the answer read up to ``MAX_ANSWER_BYTES``; its status."""
    with client.stream("POST", url, content=body, headers=headers) as response:
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break  # leaving the block unread closes the connection
        assert response.status_code == 200, f"httpx: HTTP {response.status_code}"
        response.headers.get("Retry-After")  # the dispatcher reads it for a 429
        return response.status_code


def ours_post(client: CallbackHttp, url: str, body: bytes, headers: dict[str, str]) -> int:
    answer = client.post(url, body, headers)
    assert answer.status == 200, f"CallbackHttp: HTTP {answer.status}"
    return answer.status


def run(rounds: int, scale: float = 1.0) -> list[Comparison]:
    """Ours against httpx; ``scale`` multiplies the 1,000 POSTs per round."""
    body, headers = callback()
    calls = max(1, int(1000 * scale))
    with Receiver() as receiver:
        ours, theirs = CallbackHttp(TIMEOUT, max_answer_bytes=MAX_ANSWER_BYTES), httpx_client()
        try:
            before = receiver.received()
            mine, library = measure_pair(
                Side(
                    "CallbackHttp (http.client)",
                    lambda: ours_post(ours, receiver.url, body, headers),
                ),
                Side("httpx.Client", lambda: httpx_post(theirs, receiver.url, body, headers)),
                calls=calls,
                rounds=rounds,
            )
            posted = 2 * (1 + calls * rounds)
            received = receiver.received() - before
        finally:
            ours.close()
            theirs.close()
    assert received == posted, f"the receiver parsed {received} callbacks of {posted} sent"
    case = f"POST {len(body)} B JSON, signed, keep-alive"
    equivalent = f"both answered 200 every time; the receiver parsed all {posted} bodies"
    return [Comparison(PART, case, mine, library, equivalent)]
