"""The HTTP side of the benchmark: one asyncio HTTP/1.1 server (keep-alive) that plays the
template service (``GET /api/v1/templates/<code>``) and the gateway's callback endpoint
(``POST /api/v1/email/status/``), recording each callback's arrival time. It answers from
memory and does no other work, so what it costs is the HTTP parsing the worker needs anyway."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.workloads import DIGEST_CODE, DIGEST_TEMPLATE

TEMPLATE_CODE = "welcome"
CALLBACK_PATH = "/api/v1/email/status/"
TEMPLATE: dict[str, Any] = {
    "subject": "Welcome to Example, {{ name }}",
    "html_body": (
        "<html><body><h1>Hello {{ name }}</h1>"
        "<p>Thanks for signing up. Please confirm your address by following the link below; "
        "it stays valid for 24 hours.</p>"
        '<p><a href="{{ link }}">Confirm my address</a></p>'
        "<p>If you did not sign up, you can ignore this message: nothing happens until the "
        "address is confirmed.</p><p>The Example team</p></body></html>"
    ),
    "version": "1",
}


@dataclass
class CallbackLog:
    """Callbacks received: (arrival time, notification_id, status). Appends are atomic."""

    arrivals: list[tuple[float, str, str]] = field(default_factory=list)

    def delivered(self) -> dict[str, float]:
        """First arrival time of a ``delivered`` callback per notification id."""
        first: dict[str, float] = {}
        for moment, notification_id, status in list(self.arrivals):
            if status == "delivered" and notification_id not in first:
                first[notification_id] = moment
        return first

    def clear(self) -> None:
        self.arrivals.clear()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: keep-alive, pipelining, ``Content-Length`` bodies only (what
    the worker's clients send). Anything it cannot read closes the connection."""

    def __init__(self, services: HttpServices) -> None:
        self._services = services
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the answer is one write, but the peer may still wait on Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            request = _parse_head(self._buffer[:head_end])
            if request is None:
                self._transport.close()
                return
            method, path, length, close = request
            if len(self._buffer) < head_end + 4 + length:
                return  # the body is still on its way
            body = self._buffer[head_end + 4 : head_end + 4 + length]
            self._buffer = self._buffer[head_end + 4 + length :]
            code, answer = self._services.answer(method, path, body)
            status = "200 OK" if code == 200 else f"{code} Error"
            head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {len(answer)}\r\n"
            head += "Connection: close\r\n\r\n" if close else "\r\n"
            self._transport.write(head.encode() + answer)
            if close:
                self._transport.close()


def _parse_head(head: bytes) -> tuple[str, str, int, bool] | None:
    """(method, path, content length, close after answering) of a request head, or None."""
    try:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, version = request_line.split(" ")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return None
    if length < 0 or "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    return method, path, length, close


class HttpServices:
    """Template service and callback receiver on one loopback port: an asyncio server on its
    own thread (a thread per connection cost ~0.3 ms of CPU per callback, on the cores the
    worker is measured on)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.callbacks = CallbackLog()
        self._templates = {
            f"/api/v1/templates/{code}": json.dumps({"success": True, "data": data}).encode()
            for code, data in ((TEMPLATE_CODE, TEMPLATE), (DIGEST_CODE, DIGEST_TEMPLATE))
        }
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Connection(self), host, port)
        )
        self._address = self._server.sockets[0].getsockname()[:2]
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bench-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://{host!s}:{port}"

    @property
    def callback_url(self) -> str:
        return self.url + CALLBACK_PATH

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """The status code and body for one request."""
        template = self._templates.get(path.partition("?")[0]) if method == "GET" else None
        if template is not None:
            return 200, template
        if method != "POST" or path != CALLBACK_PATH:
            return 404, b'{"success": false}'
        moment = time.time()
        try:
            event = json.loads(body)
            notification_id, status = str(event["notification_id"]), str(event["status"])
        except (ValueError, KeyError, TypeError):
            return 400, b"{}"
        self.callbacks.arrivals.append((moment, notification_id, status))
        return 200, b'{"success": true}'

    def start(self) -> HttpServices:
        self._thread.start()
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
