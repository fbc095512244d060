"""The inbound message (CONTRACT section 3): its model, and the path from bytes to a request.

``parse_message`` is the only door from raw broker bytes to an ``EmailRequest``. It refuses
hostile or malformed input with a ``PermanentFailure`` whose reason is a stable code and whose
detail names fields but never echoes values. The stages, in order: size (before decoding),
strict JSON (``schemas.strict_json``), envelope unwrapping, the message type, the tolerant typed
model ``InboundMessage`` (aliases, unknown fields ignored), then normalisation: one recipient,
ids, defaults and the payload hash that idempotency compares.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from schemas.addresses import validate_address
from schemas.failures import PermanentFailure, Reason
from schemas.request import EmailRequest
from schemas.schedule import MAX_SCHEDULE_DAYS, Instant, read_schedule
from schemas.strict_json import loads_strict

MAX_BYTES = 262144  # 256 KiB, the contract's default
MAX_ENVELOPES = 2
_PEEK_LIMIT = 1 << 20  # peek_ids reads at most the first 1 MiB of a body
_ENVELOPE_MARKERS = ("pattern", "success")
_ID_KEYS = ("request_id", "requestId")
_TYPE_KEYS = ("notification_type", "notificationType")
_PEEK_KEYS = {  # each id's spellings, snake_case first (it wins, as in parse_message)
    "request_id": ("request_id", "requestId"),
    "notification_id": ("notification_id", "notificationId"),
    "correlation_id": ("correlation_id", "correlationId"),
}
_PEEK_NAMES = {key: name for name, keys in _PEEK_KEYS.items() for key in keys}
# Linear: one alternation of literals, then at most 256 characters in a string.
_PEEK_RE = re.compile(
    r'"(' + "|".join(_PEEK_NAMES) + r')"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.){1,256})"'
)
MAX_ID = 128
TEMPLATE_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PRIORITY_PATTERN = r"^\s*(?:10|[0-9])\s*$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}$"
# Keys that belong to a message: beside an envelope's "data" they make it ambiguous.
_MESSAGE_KEYS = frozenset(
    {"template_code", "templateCode", "user_id", "userId", "variables", "user", "to"}
    | {"to_email", "toEmail", "user_email", "userEmail", "recipient", "email"}
)


def is_valid_id(value: str) -> bool:
    """True for an id the contract accepts: 1-128 printable characters, not only spaces."""
    return 0 < len(value) <= MAX_ID and value.isprintable() and not value.isspace()


def _printable_id(value: str) -> str:
    if not is_valid_id(value):
        raise ValueError("must be 1-128 printable characters")
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_printable_id)]
UserId = Id | Annotated[int, Field(strict=True)]
# Address fields accept any JSON value so that a list or a number is classified as
# recipient_invalid by schemas.addresses, not as a generic invalid_message.
Address = Annotated[
    Any,
    WithJsonSchema({"type": ["string", "null"], "format": "email", "description": "one mailbox"}),
]


class InboundUser(BaseModel):
    """An embedded user object: may supply user_id, the address and variables.name."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UserId | None = None
    email: Address = None
    name: str | None = None


class InboundMessage(BaseModel):
    """An email notification request as gateways publish it (CONTRACT section 3).

    Accepted envelopes (peeled only when the outer object has no request_id of its own, at
    most two levels): {"pattern": ..., "data": {...}} (NestJS RMQ transport) and
    {"success": ..., "data": {...}, ...} (gateway response envelope).
    Recipient address under any of: to, to_email, toEmail, user_email, userEmail, recipient,
    email, variables.email, user.email; fields that are present must agree. An embedded user
    object may also supply user_id (user.id) and variables.name (user.name).
    Extension: camelCase names are accepted for requestId, notificationType, userId,
    templateCode, notificationId, correlationId, toEmail, userEmail and callbackUrl; when both
    spellings are present the snake_case one wins.
    Unknown fields are ignored. The body must be UTF-8 JSON without duplicate keys, NaN or
    Infinity, nested at most 32 levels, 256 KiB by default.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, title="InboundMessage")

    request_id: Id = Field(
        validation_alias=AliasChoices("request_id", "requestId"), description="idempotency key"
    )
    notification_type: str | None = Field(
        default=None,
        validation_alias=AliasChoices("notification_type", "notificationType"),
        description="when present it must be 'email' (case-insensitive)",
    )
    user_id: UserId | None = Field(
        default=None,
        validation_alias=AliasChoices("user_id", "userId"),
        description="required when no address is given; an integer is read as its string",
    )
    template_code: Annotated[str, Field(pattern=TEMPLATE_CODE_PATTERN)] = Field(
        validation_alias=AliasChoices("template_code", "templateCode")
    )
    variables: dict[str, Any] | None = None
    priority: (
        Annotated[int, Field(strict=True, ge=0, le=10)]
        | Annotated[str, Field(pattern=PRIORITY_PATTERN)]
        | None
    ) = None
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="may carry batch_id (string or integer) for batch progress, and send_at"
        " or expires_at",
    )
    language: Annotated[str, Field(max_length=35, pattern=LANGUAGE_PATTERN)] | None = None
    notification_id: Id | None = Field(
        default=None, validation_alias=AliasChoices("notification_id", "notificationId")
    )
    correlation_id: Id | None = Field(
        default=None, validation_alias=AliasChoices("correlation_id", "correlationId")
    )
    callback_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        default=None,
        validation_alias=AliasChoices("callback_url", "callbackUrl"),
        description="used only when its host is on the operator's allow-list",
    )
    to: Address = None
    to_email: Address = None
    to_email_camel: Address = Field(default=None, validation_alias="toEmail")
    user_email: Address = None
    user_email_camel: Address = Field(default=None, validation_alias="userEmail")
    recipient: Address = None
    email: Address = None
    user: InboundUser | None = None
    send_at: Instant = Field(
        default=None,
        validation_alias=AliasChoices("send_at", "sendAt"),
        description="not sent before; at most MAX_SCHEDULE_DAYS ahead; past or absent: now",
    )
    expires_at: Instant = Field(
        default=None,
        validation_alias=AliasChoices("expires_at", "expiresAt"),
        description="not sent after: failed with reason expired",
    )

    def address_fields(self) -> list[tuple[str, object]]:
        """Every place an address may sit, named as the sender spelled it, in priority order."""
        variables = self.variables or {}
        return [
            ("to", self.to),
            ("to_email", self.to_email),
            ("toEmail", self.to_email_camel),
            ("user_email", self.user_email),
            ("userEmail", self.user_email_camel),
            ("recipient", self.recipient),
            ("email", self.email),
            ("variables.email", variables.get("email")),
            ("user.email", self.user.email if self.user else None),
        ]


def _invalid(detail: str) -> PermanentFailure:
    return PermanentFailure(Reason.INVALID_MESSAGE, detail)


def _unwrap(value: object) -> dict[str, Any]:
    """Peel NestJS ``{"pattern", "data"}`` and gateway ``{"success", "data"}`` envelopes.

    Only an object without a request id of its own is an envelope; at most ``MAX_ENVELOPES``
    levels are peeled. Fields beside ``data`` that belong to a message make it ambiguous.
    """
    if not isinstance(value, dict):
        raise _invalid("message must be a JSON object")
    for _ in range(MAX_ENVELOPES):
        if any(key in value for key in _ID_KEYS) or "data" not in value:
            break
        if not any(marker in value for marker in _ENVELOPE_MARKERS):
            break
        if _MESSAGE_KEYS.intersection(value):
            raise _invalid("ambiguous envelope: message fields beside data")
        if not isinstance(value["data"], dict):
            raise _invalid("envelope data must be a JSON object")
        value = value["data"]
    return value


def _check_type(fields: Mapping[str, Any]) -> None:
    for key in _TYPE_KEYS:
        kind = fields.get(key)
        if isinstance(kind, str) and kind.strip().lower() != "email":
            raise PermanentFailure(Reason.WRONG_TYPE, f"{key} is not email")


def _describe(exc: ValidationError) -> str:
    """Name the failing fields (the key the sender used) and error kinds; never the values."""
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc[:2]) if loc[0] == "user" and len(loc) > 1 else loc[0]
        problems.setdefault(field, "missing" if error["type"] == "missing" else "invalid")
    return "; ".join(f"{field}: {kind}" for field, kind in sorted(problems.items()))


def _recipient(message: InboundMessage) -> str | None:
    """The one validated recipient, or None. Empty or null fields count as absent."""
    found: dict[str, str] = {}
    for name, value in message.address_fields():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            found[name] = validate_address(value)
        except PermanentFailure as exc:
            raise PermanentFailure(exc.reason, f"{name}: {exc.detail}") from None
    if len({address.casefold() for address in found.values()}) > 1:
        raise PermanentFailure(Reason.RECIPIENT_INVALID, f"fields disagree: {', '.join(found)}")
    return next(iter(found.values()), None)


def _user_id(message: InboundMessage) -> str | None:
    embedded = message.user.id if message.user else None
    ids = {str(value) for value in (message.user_id, embedded) if value is not None}
    if len(ids) > 1:
        raise _invalid("user_id and user.id disagree")
    user_id = next(iter(ids), None)
    if user_id is not None and not is_valid_id(user_id):
        raise _invalid("user_id: invalid")
    return user_id


def _batch_id(metadata: Mapping[str, Any]) -> str | None:
    raw = metadata.get("batch_id")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int) or not is_valid_id(str(raw)):
        raise _invalid("metadata.batch_id: invalid")
    return str(raw)


def payload_hash(content: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``content``: key order, whitespace and escaping of
    the original body do not matter; any change of a value does."""
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalise(
    message: InboundMessage, amqp_correlation_id: str | None, now: datetime, max_days: int
) -> EmailRequest:
    variables = dict(message.variables or {})
    if message.user and message.user.name is not None:
        variables.setdefault("name", message.user.name)
    metadata = dict(message.metadata or {})
    recipient = _recipient(message)
    user_id = _user_id(message)
    if recipient is None and user_id is None:
        raise PermanentFailure(Reason.RECIPIENT_MISSING, "no recipient address and no user_id")
    if amqp_correlation_id is not None and not is_valid_id(amqp_correlation_id):
        amqp_correlation_id = None  # a property we cannot log safely is ignored
    top = {"send_at": message.send_at, "expires_at": message.expires_at}
    schedule = read_schedule(top, metadata, now=now, max_days=max_days)
    core = {
        "request_id": message.request_id,
        "notification_id": message.notification_id or message.request_id,
        "template_code": message.template_code,
        "recipient": recipient,
        "user_id": user_id,
        "variables": variables,
        "language": message.language,
        "metadata": metadata,
    }
    extra = {
        "correlation_id": message.correlation_id or amqp_correlation_id or message.request_id,
        "priority": None if message.priority is None else int(message.priority),
        "batch_id": _batch_id(metadata),
        "callback_url": message.callback_url,
        # The instants in one spelling, wherever they were: a moved send_at is another payload.
        "payload_hash": payload_hash(schedule.hashed(core)),
        "send_at": schedule.send_at,
        "expires_at": schedule.expires_at,
    }
    return EmailRequest.model_validate({**core, **extra})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def parse_message(
    body: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    amqp_correlation_id: str | None = None,
    clock: Callable[[], datetime] = _utc_now,
    max_schedule_days: int = MAX_SCHEDULE_DAYS,
) -> EmailRequest:
    """Turn a raw message body into an ``EmailRequest``.

    Guarantees: the result satisfies every ``EmailRequest`` promise; the same request in any
    accepted envelope or with any accepted field names has the same ``payload_hash``.
    ``send_at`` is checked against ``clock()`` and ``max_schedule_days`` (schemas.schedule).
    Raises ``PermanentFailure`` with reason ``too_large``, ``invalid_json``,
    ``invalid_message``, ``wrong_type``, ``recipient_invalid`` or ``recipient_missing``.
    """
    if len(body) > max_bytes:
        raise PermanentFailure(Reason.TOO_LARGE, f"body is larger than {max_bytes} bytes")
    fields = _unwrap(loads_strict(body))
    _check_type(fields)
    try:
        message = InboundMessage.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(_describe(exc)) from None
    return _normalise(message, amqp_correlation_id, clock(), max_schedule_days)


@dataclass(frozen=True)
class PeekedIds:
    """The ids a message that may be invalid still carries; each one a valid id (1-128
    printable characters) or None."""

    request_id: str | None = None
    notification_id: str | None = None
    correlation_id: str | None = None  # the body's
    message_id: str | None = None  # the AMQP message_id property
    amqp_correlation_id: str | None = None  # the AMQP correlation_id property

    @property
    def callback_id(self) -> str | None:
        """Whom a status callback is about: the notification_id, else the request_id, the
        correlation_id, the AMQP message_id, the AMQP correlation_id."""
        return (
            self.notification_id
            or self.request_id
            or self.correlation_id
            or self.message_id
            or self.amqp_correlation_id
        )

    @property
    def correlation(self) -> str | None:
        """The correlation id to carry: the body's, else the AMQP property."""
        return self.correlation_id or self.amqp_correlation_id


def peek_ids(body: bytes, *, message_id: object = None, correlation_id: object = None) -> PeekedIds:
    """Best effort: the ids of a body that may be invalid (flat or camelCase names, inside
    NestJS ``{pattern, data}`` or gateway ``{success, data}`` envelopes, or found by key in
    truncated JSON), with the AMQP ``message_id`` / ``correlation_id`` properties.

    Total: never raises, reads at most the first 1 MiB of ``body`` (a linear parse and a
    linear key search), and returns only ids that ``is_valid_id`` accepts."""
    try:
        found = _peek(body)
    except Exception:  # best effort by contract: any failure means "unknown"
        found = {}
    return PeekedIds(
        request_id=_valid_id(found.get("request_id")),
        notification_id=_valid_id(found.get("notification_id")),
        correlation_id=_valid_id(found.get("correlation_id")),
        message_id=_valid_id(message_id),
        amqp_correlation_id=_valid_id(correlation_id),
    )


def peek_request_id(body: bytes) -> str | None:
    """Best effort: the request id of a body that may be invalid, for dead-letter headers.

    Never raises. Returns only a printable string of 1-128 characters, else None.
    """
    return peek_ids(body).request_id


def _valid_id(value: object) -> str | None:
    return value if isinstance(value, str) and is_valid_id(value) else None


def _peek(body: bytes) -> dict[str, object]:
    text = bytes(body[:_PEEK_LIMIT]).decode("utf-8-sig", errors="replace")
    if len(body) <= _PEEK_LIMIT:
        try:
            return _ids_in(json.loads(text))
        except (ValueError, RecursionError):
            pass
    found: dict[str, object] = {}  # truncated or odd JSON: look for the keys themselves
    for match in _PEEK_RE.finditer(text):
        name = _PEEK_NAMES[match.group(1)]
        if name not in found and _valid_id(value := json.loads(f'"{match.group(2)}"')):
            found[name] = value
            if len(found) == len(_PEEK_KEYS):
                break
    return found


def _ids_in(value: object) -> dict[str, object]:
    """Each id from the outermost level that has a valid one, peeling ``data`` envelopes."""
    found: dict[str, object] = {}
    for _ in range(MAX_ENVELOPES + 1):
        if not isinstance(value, dict):
            break
        for name, keys in _PEEK_KEYS.items():
            valid = next((value[key] for key in keys if _valid_id(value.get(key))), None)
            if valid is not None:
                found.setdefault(name, valid)
        value = value.get("data")
    return found
