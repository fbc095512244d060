"""The AsyncAPI 3.0 document of the worker's messaging contract (``schemas/asyncapi.json``).

It describes what crosses the worker's edges: the inbound message on ``email.queue`` (published by
the gateway to ``notifications.direct``), the dead-letter record on ``failed.queue`` (the
original body with the dead-letter headers) and the status callback the worker POSTs to the
gateway (signed with the Standard Webhooks headers). Every payload and header schema is generated
from the pydantic models that the worker itself validates and writes with, so the document cannot
drift from the code: ``python -m schemas`` writes it beside the JSON Schema files and
``python -m schemas --check`` fails when the committed file is stale. Output is deterministic
(sorted keys, indent 2, trailing newline). JSON is YAML 1.2, so YAML tooling reads it as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.callback import StatusCallback
from schemas.deadletter import DeadLetterHeaders
from schemas.failures import Reason
from schemas.inbound import MAX_BYTES, InboundMessage

ASYNCAPI_PATH = Path(__file__).resolve().parent / "asyncapi.json"
# The contract's own version: bump it when a published shape changes (the staleness check
# makes that change visible in review).
CONTRACT_VERSION = "1.0.0"
EXCHANGE = "notifications.direct"
ROUTING_KEYS = ("email", "email.queue")
AMQP_BINDING_VERSION = "0.3.0"
HTTP_BINDING_VERSION = "0.3.0"
_REF = "#/components/schemas/{model}"
# Publishes are persistent and mandatory: an unroutable message is returned, never dropped.
_PERSISTENT_MANDATORY = {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}


def _schemas() -> dict[str, Any]:
    """Component schemas generated from the models, with references into components."""
    _, top = models_json_schema(
        [
            (InboundMessage, "validation"),  # what the worker accepts
            (DeadLetterHeaders, "serialization"),  # what it writes
            (StatusCallback, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["FailureReason"] = {
        "type": "string",
        "enum": [reason.value for reason in Reason],
        "description": "Stable reason codes (schemas.failures.Reason). A dead-letter record "
        "carries a permanent code, retries_exhausted or delivery_limit.",
    }
    schemas["WebhookHeaders"] = {
        "type": "object",
        "required": ["webhook-id", "webhook-timestamp"],
        "properties": {
            "webhook-id": {
                "type": "string",
                "description": "Stable per status event: the same on every retry, so the "
                "receiver can drop duplicates.",
            },
            "webhook-timestamp": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Unix seconds when this attempt was signed.",
            },
            "webhook-signature": {
                "type": "string",
                "pattern": "^v1,[A-Za-z0-9+/=]+$",
                "description": "Present when EMAIL_WORKER_CALLBACK_SECRET (whsec_ + base64 of "
                "24-64 bytes, the key) is set: 'v1,' + base64 HMAC-SHA256 over "
                "'{webhook-id}.{webhook-timestamp}.{body as sent}' (Standard Webhooks).",
            },
            "Content-Type": {"type": "string", "const": "application/json"},
        },
    }
    return schemas


def _ref(name: str, section: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{section}/{name}"}


_REASON_HEADER = {"type": "object", "properties": {"failure_reason": _ref("FailureReason")}}


def _amqp_queue(name: str) -> dict[str, Any]:
    queue = {"name": name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"}
    return {"is": "queue", "queue": queue, "bindingVersion": AMQP_BINDING_VERSION}


def _channels() -> dict[str, Any]:
    exchange = {"name": EXCHANGE, "type": "direct", "durable": True, "autoDelete": False}
    return {
        "emailQueue": {
            "address": "email.queue",
            "title": "email.queue",
            "description": f"Bound to {EXCHANGE} with routing keys "
            + " and ".join(f"'{key}'" for key in ROUTING_KEYS)
            + " (configurable); publishing straight to the queue through the default exchange "
            "works too. An existing queue is adopted as it is, whatever its type and arguments; "
            "one the worker creates follows EMAIL_WORKER_QUEUE_TYPE (quorum by default) and "
            "EMAIL_WORKER_QUEUE_ARGUMENTS. Fixed-delay retry queues (email.retry.<ms>ms) "
            "dead-letter their expired copies back here by name through the default exchange "
            "(no binding involved), at least once when they are quorum queues.",
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {"inboundMessage": _ref("inboundMessage", "messages")},
            "bindings": {"amqp": _amqp_queue("email.queue")},
        },
        "notificationsExchange": {
            "address": EXCHANGE,
            "title": EXCHANGE,
            "description": "Where gateways publish (routing key 'email' or 'email.queue'). "
            "failed.queue is bound with routing key 'failed'; the worker itself publishes its "
            "retry copies and dead letters by queue name through the default exchange.",
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {"inboundMessage": _ref("inboundMessage", "messages")},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {**exchange, "vhost": "/"},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        },
        "failedQueue": {
            "address": "failed.queue",
            "title": "failed.queue",
            "description": f"The dead-letter queue, bound to {EXCHANGE} with routing key "
            "'failed'. The worker publishes dead letters to it by name through the default "
            "exchange (mandatory, confirmed), so a missing binding cannot drop them; the "
            "original is acked only once the copy was routed. Records stay until an SRE lists, "
            "replays, exports or purges them (email-worker dlq).",
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {"deadLetterRecord": _ref("deadLetterRecord", "messages")},
            "bindings": {"amqp": _amqp_queue("failed.queue")},
        },
        "statusCallback": {
            "address": "/api/v1/email/status/",
            "title": "Status callback",
            "description": "EMAIL_WORKER_CALLBACK_URL (default path shown, trailing slash "
            "kept; placeholders {notification_id}, {request_id}, {correlation_id} and {status} "
            "in its path or query are filled, URL-encoded, when a callback is sent). The body "
            "shown is the default: EMAIL_WORKER_CALLBACK_FIELD_NAMES renames or drops fields "
            "(and adds the opt-in attempts) and EMAIL_WORKER_CALLBACK_EXTRA_FIELDS merges "
            "constant fields in. Delivered at least once from an outbox with backoff for hours; "
            "pending once per counted attempt; a status never moves backwards. No recipient "
            "address and no email content.",
            "servers": [{"$ref": "#/servers/gateway"}],
            "messages": {"statusCallback": _ref("statusCallback", "messages")},
        },
    }


def _messages() -> dict[str, Any]:
    return {
        "inboundMessage": {
            "name": "InboundMessage",
            "title": "Email notification request",
            "summary": "One email to send, published by the API gateway.",
            "description": f"UTF-8 JSON, at most {MAX_BYTES} bytes by default. The optional "
            "AMQP correlation_id property is carried into logs and callbacks; the timestamp "
            "property (seconds or milliseconds) feeds the end-to-end latency metric.",
            "contentType": "application/json",
            "payload": _ref("InboundMessage"),
            "correlationId": {
                "description": "The payload's correlation_id, else the AMQP correlation_id "
                "property, else request_id.",
                "location": "$message.payload#/correlation_id",
            },
            "examples": [
                {
                    "name": "hng",
                    "summary": "The HNG-style request with the recipient resolved by user_id.",
                    "payload": {
                        "request_id": "8f14e45f-ceea-4e67-a1d7-0c3a5b9e8f21",
                        "notification_type": "email",
                        "user_id": "3a1c9e7e-2b4d-4f7a-9d0e-6c5b4a3f2e1d",
                        "template_code": "welcome",
                        "variables": {"name": "Ada", "link": "https://example.com/confirm"},
                        "priority": 5,
                        "metadata": {"batch_id": "spring-campaign"},
                    },
                }
            ],
        },
        "deadLetterRecord": {
            "name": "DeadLetterRecord",
            "title": "Dead-letter record",
            "summary": "A message the worker gave up on, with why.",
            "description": "The original body byte for byte (usually an InboundMessage, but "
            "possibly invalid JSON, which is why the payload is not constrained) and the "
            "original properties, plus the dead-letter headers. Replaying republishes the "
            "body unchanged to email.queue; idempotency still holds.",
            "headers": {"allOf": [_ref("DeadLetterHeaders"), _REASON_HEADER]},
            "payload": {"description": "The original message body, unchanged."},
        },
        "statusCallback": {
            "name": "StatusCallback",
            "title": "Status callback",
            "summary": "The delivery status of one notification, POSTed to the gateway.",
            "contentType": "application/json",
            "headers": _ref("WebhookHeaders"),
            "payload": _ref("StatusCallback"),
            "bindings": {
                "http": {"headers": _ref("WebhookHeaders"), "bindingVersion": HTTP_BINDING_VERSION}
            },
            "examples": [
                {
                    "name": "delivered",
                    "payload": {
                        "notification_id": "8f14e45f-ceea-4e67-a1d7-0c3a5b9e8f21",
                        "status": "delivered",
                        "timestamp": "2026-11-23T10:00:00Z",
                        "error": None,
                        "request_id": "8f14e45f-ceea-4e67-a1d7-0c3a5b9e8f21",
                        "correlation_id": "8f14e45f-ceea-4e67-a1d7-0c3a5b9e8f21",
                    },
                }
            ],
        },
    }


def _operations() -> dict[str, Any]:
    return {
        "publishEmail": {
            "action": "send",
            "title": "The gateway publishes an email request",
            "channel": {"$ref": "#/channels/notificationsExchange"},
            "messages": [{"$ref": "#/channels/notificationsExchange/messages/inboundMessage"}],
            "bindings": {"amqp": _PERSISTENT_MANDATORY},
        },
        "consumeEmail": {
            "action": "receive",
            "title": "The worker consumes email requests",
            "description": "Manual acknowledgements after the outcome is settled; retries go "
            "through delay queues, never a requeue. Idempotent by request_id. A request whose "
            "send_at is ahead is acked and held in the worker's database; at send_at its copy "
            "is published back to this queue by name (default exchange).",
            "channel": {"$ref": "#/channels/emailQueue"},
            "messages": [{"$ref": "#/channels/emailQueue/messages/inboundMessage"}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        },
        "deadLetter": {
            "action": "send",
            "title": "The worker dead-letters a message it gave up on",
            "channel": {"$ref": "#/channels/failedQueue"},
            "messages": [{"$ref": "#/channels/failedQueue/messages/deadLetterRecord"}],
            "bindings": {"amqp": _PERSISTENT_MANDATORY},
        },
        "sendStatusCallback": {
            "action": "send",
            "title": "The worker POSTs a status callback",
            "description": "A 2xx answer settles the callback; any other 4xx but 408, 425 and "
            "429 is final after that one try (the callback is rejected); anything else, and no "
            "answer, is retried with backoff (Retry-After honoured on 429) until "
            "EMAIL_WORKER_CALLBACK_MAX_AGE_HOURS.",
            "channel": {"$ref": "#/channels/statusCallback"},
            "messages": [{"$ref": "#/channels/statusCallback/messages/statusCallback"}],
            "bindings": {"http": {"method": "POST", "bindingVersion": HTTP_BINDING_VERSION}},
        },
    }


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document as a JSON-compatible dict."""
    return {
        "asyncapi": "3.0.0",
        "id": "urn:email-worker:contract",
        "info": {
            "title": "Email worker",
            "version": CONTRACT_VERSION,
            "description": "Consumes email requests from RabbitMQ, sends them over SMTP, "
            "dead-letters failures to failed.queue and reports status to the gateway.",
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ 3.10 or newer (EMAIL_WORKER_AMQP_URL).",
            },
            "gateway": {
                "host": "api-gateway.example.com",
                "protocol": "https",
                "description": "The API gateway that receives status callbacks "
                "(EMAIL_WORKER_CALLBACK_URL).",
            },
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {"schemas": _schemas(), "messages": _messages()},
    }


def render() -> str:
    """Deterministic text: sorted keys, indent 2, UTF-8 characters kept, trailing newline."""
    return json.dumps(document(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def is_stale(path: Path = ASYNCAPI_PATH) -> bool:
    """True when ``path`` is missing or differs from what the models generate."""
    return not path.is_file() or path.read_text(encoding="utf-8") != render()


def write(path: Path = ASYNCAPI_PATH) -> bool:
    """Write the document to ``path`` unless it is already current; True when written."""
    if not is_stale(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return True
