"""Replays of the API gateways the worker meets in the wild, written from their public
descriptions (issue 13, CONTRACT sections 1-3 and 7), not from their code. A ``Gateway``
declares ``email.queue`` its own way at its start-up (a refused declaration, a 406, lands in
``failures``: the real gateway crashes or answers 500 from then on), publishes with its
client's wire properties and body shape, and plays its status endpoint on a ``FakeHttpServer``:
what it understood goes to ``statuses``, what it refused to ``refusals``, every body it got to
``bodies``. Each subclass says what it replays; the services are in ``gateway_recipes``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from tests.support.http import FakeHttpServer, Reply, Seen

STATUSES = ("delivered", "pending", "failed")
JSON_PERSISTENT: dict[str, Any] = {"delivery_mode": 2, "content_type": "application/json"}
VARIABLES = {"name": "Ada", "link": "https://example.com/start", "meta": {}}
AIO_PIKA_ARGUMENTS = {"x-max-priority": 10, "x-message-ttl": 86_400_000, "x-max-length": 100_000}


@dataclass(frozen=True)
class Email:
    """One email as the gateway's own API received it, before the gateway shapes it."""

    request_id: str
    notification_id: str
    to_email: str | None = None
    user_id: str | None = None
    template_code: str = "welcome"
    priority: int = 1
    awaits_reply: bool = False  # NestJS ``send()`` (request-response) rather than ``emit()``


@dataclass(frozen=True)
class Understood:
    """A status the gateway's endpoint understood (it answered 2xx and found its fields)."""

    notification_id: str
    status: str
    error: str | None


class Gateway:
    """The common part of the replays; subclasses say how they declare, shape and read."""

    style: ClassVar[str]
    status_path: ClassVar[str]
    arguments: ClassVar[dict[str, Any]]  # its queue arguments, when it declares some

    def __init__(self, amqp_url: str, exchange: str, queue: str, *, with_arguments: bool) -> None:
        self.amqp_url, self.exchange, self.queue = amqp_url, exchange, queue
        self.queue_arguments = dict(self.arguments) if with_arguments else {}
        self.failures: list[str] = []
        self.statuses: list[Understood] = []
        self.refusals: list[tuple[int, bytes]] = []
        self.bodies: list[Any] = []
        self._lock = threading.Lock()

    def declare(self) -> bool:
        """What the gateway declares at its start-up; False (and a failure) when refused."""
        return self._on_channel(self._declare)

    def publish(self, email: Email, *, invalid: bool = False) -> bool:
        """``invalid``: a message the worker must refuse that still carries the gateway's id."""
        body = self.invalid_body(email) if invalid else self.body(email)
        return self._on_channel(lambda ch: self._publish(ch, body, email))

    def _on_channel(self, action: Callable[[BlockingChannel], None]) -> bool:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # the replay learns of a dropped publish; wire unchanged
            action(channel)
            return True
        except AMQPError as exc:  # a 406, an unroutable or nacked publish
            self.failures.append(f"{type(exc).__name__}: {exc!r}")
            return False
        finally:
            if connection.is_open:
                connection.close()

    def _declare(self, channel: BlockingChannel) -> None:
        channel.queue_declare(self.queue, durable=True, arguments=self.queue_arguments or None)

    def _send(self, ch: BlockingChannel, exchange: str, key: str, body: Any, **kw: Any) -> None:
        data = json.dumps(body).encode()
        ch.basic_publish(exchange, key, data, pika.BasicProperties(**kw), mandatory=True)

    def _publish(self, channel: BlockingChannel, body: Any, email: Email) -> None: ...  # by style
    def body(self, email: Email) -> Any: ...
    def invalid_body(self, email: Email) -> Any: ...
    def read_status(self, seen: Seen, body: dict[str, Any]) -> tuple[int, Understood | None]:
        return 500, None

    def serve_status(self, http: FakeHttpServer) -> None:
        http.route("POST", self.status_path, self._answer)

    def understood(self, notification_id: str) -> list[Understood]:
        with self._lock:
            return [s for s in self.statuses if s.notification_id == notification_id]

    def _answer(self, seen: Seen) -> Reply:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = seen.json()
        code, understood = self.read_status(seen, body if isinstance(body, dict) else {})
        with self._lock:
            self.bodies.append(body)
            if not 200 <= code < 300:
                self.refusals.append((code, seen.body))
            elif understood is not None:
                self.statuses.append(understood)
        return Reply(code, {"success": 200 <= code < 300})


def _snake_case(body: dict[str, Any], notification_id: object) -> Understood | None:
    status, error = body.get("status"), body.get("error")
    if not isinstance(notification_id, str) or status not in STATUSES or "timestamp" not in body:
        return None
    return Understood(notification_id, str(status), error if isinstance(error, str) else None)


class SpecPika(Gateway):
    """FastAPI + pika, as the spec draws it: declares the direct exchange, the queue and the
    ``email`` binding; persistent JSON, the flat HNG body; its endpoint reads snake_case."""

    style = "spec_pika"
    status_path = "/api/v1/email/status/"
    arguments: ClassVar[dict[str, Any]] = {"x-max-priority": 10}

    def _declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, "direct", durable=True)
        super()._declare(channel)
        channel.queue_bind(self.queue, self.exchange, routing_key="email")

    def _publish(self, channel: BlockingChannel, body: Any, email: Email) -> None:
        self._send(channel, self.exchange, "email", body, **JSON_PERSISTENT)

    def body(self, email: Email) -> Any:
        recipient = {"user_id": email.user_id} if email.user_id else {"to_email": email.to_email}
        return {
            "request_id": email.request_id,
            **recipient,
            "template_code": email.template_code,
            "variables": VARIABLES,
            "notification_id": email.notification_id,
            "priority": email.priority,
        }

    def invalid_body(self, email: Email) -> Any:  # a template code the contract refuses
        return {**self.body(email), "template_code": "welcome email!"}

    def read_status(self, seen: Seen, body: dict[str, Any]) -> tuple[int, Understood | None]:
        understood = _snake_case(body, body.get("notification_id"))
        return (200, understood) if understood else (422, None)  # FastAPI's validation error


class AioPika(Gateway):
    """aio-pika: a priority queue with a TTL and a length cap, published to straight through
    the default exchange with ``priority``, ``message_id`` and ``correlation_id``. Its endpoint
    wants ``?notification_id=`` and ``delivered_at`` / ``error_message``, else answers 400."""

    style = "aio_pika"
    status_path = "/api/v1/email/status"
    arguments: ClassVar[dict[str, Any]] = AIO_PIKA_ARGUMENTS

    def _publish(self, channel: BlockingChannel, body: Any, email: Email) -> None:
        ids = {"message_id": email.notification_id, "correlation_id": f"c-{email.request_id}"}
        self._send(channel, "", self.queue, body, **JSON_PERSISTENT, priority=email.priority, **ids)

    def body(self, email: Email) -> Any:
        return {
            "notification_id": email.notification_id,
            "request_id": email.request_id,
            "user_email": email.to_email,
            "template_code": email.template_code,
            "variables": VARIABLES,
            "priority": str(email.priority),  # a numeric string, as its pydantic model dumps it
        }

    def invalid_body(self, email: Email) -> Any:  # no request_id: its id is the message_id only
        return {"template_code": email.template_code, "user_email": email.to_email}

    def read_status(self, seen: Seen, body: dict[str, Any]) -> tuple[int, Understood | None]:
        found = parse_qs(urlsplit(seen.path).query).get("notification_id")
        status, message = body.get("status"), body.get("error_message")
        wanted = body.get("delivered_at") if status == "delivered" else message
        if not found or status not in STATUSES or not wanted:
            return 400, None
        return 200, Understood(found[0], str(status), message)


class NestRmq(Gateway):
    """NestJS ``ClientRMQ``: asserts the queue (durable, no arguments by default), then
    ``sendToQueue`` of ``{"pattern", "data"}`` (``emit``) or ``{"pattern", "data", "id"}`` with
    ``reply_to`` and ``correlation_id`` (``send``), camelCase inside. Its endpoint reads
    ``notificationId``, ``status`` and ``channel``, and answers 201 whatever it got."""

    style = "nestjs"
    status_path = "/notifications/email/status"
    arguments: ClassVar[dict[str, Any]] = {"x-queue-type": "quorum"}  # queueOptions.arguments

    def _publish(self, channel: BlockingChannel, body: Any, email: Email) -> None:
        if not email.awaits_reply:  # emit(): persistent off, no content type
            self._send(channel, "", self.queue, body)
            return
        # send(): the direct reply-to pseudo-queue may be named only by a channel consuming it
        channel.basic_consume("amq.rabbitmq.reply-to", lambda *_: None, auto_ack=True)
        rpc = {"reply_to": "amq.rabbitmq.reply-to", "correlation_id": str(uuid.uuid4())}
        self._send(channel, "", self.queue, {**body, "id": rpc["correlation_id"]}, **rpc)

    def body(self, email: Email) -> Any:
        data = {
            "requestId": email.request_id,
            "notificationId": email.notification_id,
            "templateCode": email.template_code,
            "toEmail": email.to_email,
            "variables": VARIABLES,
            "priority": email.priority,
        }
        return {"pattern": "email.send", "data": data}

    def invalid_body(self, email: Email) -> Any:  # no requestId, no recipient
        data = {"notificationId": email.notification_id, "templateCode": email.template_code}
        return {"pattern": "email.send", "data": data}

    def read_status(self, seen: Seen, body: dict[str, Any]) -> tuple[int, Understood | None]:
        nid, status, error = body.get("notificationId"), body.get("status"), body.get("error")
        if isinstance(nid, str) and status in STATUSES and body.get("channel") == "email":
            return 201, Understood(nid, str(status), error if isinstance(error, str) else None)
        return 201, None  # a DTO with whitelisting: whatever else it got, it did nothing


class DjangoKombu(Gateway):
    """Django + kombu ``Producer.publish(declare=[queue])``: exchange, queue and binding declared
    again on each connection; the envelope ``{"success", "data"}`` with the user embedded. Its
    endpoint checks the Standard Webhooks signature and reads snake_case."""

    style = "django"
    status_path = "/api/v1/email/status/"
    arguments: ClassVar[dict[str, Any]] = {
        "x-dead-letter-exchange": "django.dlx",
        "x-dead-letter-routing-key": "email.dead",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the one docs/gateways.md shows

    def _declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, "direct", durable=True)
        super()._declare(channel)
        channel.queue_bind(self.queue, self.exchange, routing_key="email.queue")

    def _publish(self, channel: BlockingChannel, body: Any, email: Email) -> None:
        self._declare(channel)  # declare=[queue]: each new connection declares again
        kombu = {"content_encoding": "utf-8", "priority": 0, "headers": {}}
        self._send(channel, self.exchange, "email.queue", body, **JSON_PERSISTENT, **kombu)

    def body(self, email: Email) -> Any:
        data = {
            "request_id": email.request_id,
            "notification_id": email.notification_id,
            "template_code": email.template_code,
            "variables": VARIABLES,
            "priority": email.priority,
            "user": {"id": 7, "email": email.to_email, "name": "Ada"},
        }
        return {"success": True, "message": "Notification queued", "data": data}

    def invalid_body(self, email: Email) -> Any:  # a priority word instead of a number
        body = self.body(email)
        return {**body, "data": {**body["data"], "priority": "urgent"}}

    def read_status(self, seen: Seen, body: dict[str, Any]) -> tuple[int, Understood | None]:
        if not self._signed(seen):
            return 401, None
        understood = _snake_case(body, body.get("notification_id"))
        return (200, understood) if understood else (400, None)

    def _signed(self, seen: Seen) -> bool:
        headers = {k.lower(): v for k, v in seen.headers.items()}
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + seen.body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        return expected in headers.get("webhook-signature", "").split()  # one may match


GATEWAYS: dict[str, type[Gateway]] = {g.style: g for g in (SpecPika, AioPika, NestRmq, DjangoKombu)}
