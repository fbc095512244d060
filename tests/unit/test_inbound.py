"""The inbound message: every gateway shape normalises to one request with one payload hash,
and every hostile body is refused with its exact reason code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.failures import PermanentFailure, Reason
from schemas.inbound import parse_message, peek_request_id


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


FLAT: dict[str, Any] = {
    "request_id": "req-1",
    "notification_type": "email",
    "user_id": "u-1",
    "template_code": "welcome",
    "variables": {"name": "Ada", "link": "https://example.com/x"},
    "priority": 1,
    "metadata": {"batch_id": "b-9"},
}
ADA = "ada@example.com"


def refused(body: bytes, **kwargs: Any) -> PermanentFailure:
    with pytest.raises(PermanentFailure) as caught:
        parse_message(body, **kwargs)
    return caught.value


# --- gateway shapes ---------------------------------------------------------------------------


def test_flat_hng_message_with_user_id_only() -> None:
    request = parse_message(encode(FLAT))
    assert (request.request_id, request.user_id, request.recipient) == ("req-1", "u-1", None)
    assert request.template_code == "welcome"
    assert request.variables == {"name": "Ada", "link": "https://example.com/x"}
    assert (request.priority, request.batch_id) == (1, "b-9")
    assert request.notification_id == request.correlation_id == "req-1"
    assert len(request.payload_hash) == 64


SHAPES: dict[str, dict[str, Any]] = {
    "flat to_email": {**FLAT, "to_email": ADA},
    "nestjs pattern envelope": {"pattern": "email", "data": {**FLAT, "to_email": ADA}},
    "gateway envelope": {"success": True, "data": {**FLAT, "to": ADA}, "message": "queued"},
    "two envelopes": {"success": True, "data": {"pattern": "x", "data": {**FLAT, "email": ADA}}},
    "embedded user object": {
        **{k: v for k, v in FLAT.items() if k != "user_id"},
        "variables": {"link": "https://example.com/x"},
        "user": {"id": "u-1", "email": ADA, "name": "Ada", "push_token": "t"},
    },
    "camelCase": {
        "requestId": "req-1",
        "notificationType": "email",
        "userId": "u-1",
        "templateCode": "welcome",
        "toEmail": ADA,
        "variables": FLAT["variables"],
        "metadata": FLAT["metadata"],
    },
    "user_email and recipient agree": {**FLAT, "user_email": ADA, "recipient": "ada@EXAMPLE.com"},
    "userEmail": {**FLAT, "userEmail": ADA},
    "upper-case domain, EMAIL type": {
        **FLAT,
        "to": "ada@Example.COM",
        "notification_type": "EMAIL",
    },
    "ids, priority and callback differ": {
        **FLAT,
        "to": ADA,
        "priority": "7",
        "correlation_id": "c-1",
        "callback_url": "https://gateway.example/api/v1/email/status/",
        "unknown_field": {"ignored": True},
    },
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_shape_normalises_to_the_same_request(shape: dict[str, Any]) -> None:
    reference = parse_message(encode(SHAPES["flat to_email"]))
    request = parse_message(encode(shape))
    assert request.recipient == ADA
    assert request.user_id == "u-1"
    assert request.variables == {"name": "Ada", "link": "https://example.com/x"}
    assert (request.request_id, request.template_code) == ("req-1", "welcome")
    assert request.payload_hash == reference.payload_hash


def test_formatting_of_the_body_does_not_change_the_hash() -> None:
    reference = parse_message(encode(SHAPES["flat to_email"])).payload_hash
    reordered = dict(reversed(list(SHAPES["flat to_email"].items())))
    pretty = json.dumps(reordered, indent=4, ensure_ascii=True).encode()
    assert parse_message(pretty).payload_hash == reference
    assert parse_message(b"\xef\xbb\xbf" + encode(SHAPES["flat to_email"])).payload_hash == (
        reference
    )


def test_integer_user_id_is_normalised_to_string() -> None:
    assert parse_message(encode({**FLAT, "user_id": 42})).user_id == "42"
    assert (
        parse_message(encode({**FLAT, "user_id": 42})).payload_hash
        == parse_message(encode({**FLAT, "user_id": "42"})).payload_hash
    )


CHANGES: dict[str, dict[str, Any]] = {
    "request_id": {"request_id": "req-2"},
    "notification_id": {"notification_id": "n-1"},
    "template_code": {"template_code": "welcome.v2"},
    "recipient": {"to_email": "bob@example.com"},
    "recipient local-part case": {"to_email": "Ada@example.com"},
    "user_id": {"user_id": "u-2"},
    "variable value": {"variables": {"name": "Ada ", "link": "https://example.com/x"}},
    "variable added": {"variables": {**FLAT["variables"], "meta": {}}},
    "variable type": {"variables": {"name": "Ada", "link": "https://example.com/x", "n": 1.0}},
    "language": {"language": "pt-BR"},
    "metadata": {"metadata": {"batch_id": "b-10"}},
}


def test_any_change_of_content_changes_the_hash() -> None:
    base = {**FLAT, "to_email": ADA, "variables": {**FLAT["variables"], "n": 1}}
    hashes = {"base": parse_message(encode(base)).payload_hash}
    for name, change in CHANGES.items():
        hashes[name] = parse_message(encode({**base, **change})).payload_hash
    assert len(set(hashes.values())) == len(hashes), hashes


# --- normalisation rules ----------------------------------------------------------------------


def test_correlation_id_prefers_body_then_amqp_property_then_request_id() -> None:
    assert parse_message(encode(FLAT), amqp_correlation_id="amqp-1").correlation_id == "amqp-1"
    with_body = {**FLAT, "correlationId": "body-1"}
    assert parse_message(encode(with_body), amqp_correlation_id="amqp-1").correlation_id == (
        "body-1"
    )
    unsafe = parse_message(encode(FLAT), amqp_correlation_id="bad\r\nid")
    assert unsafe.correlation_id == "req-1"


def test_extensions_are_carried() -> None:
    request = parse_message(
        encode(
            {
                **FLAT,
                "notificationId": "n-7",
                "callbackUrl": "http://169.254.169.254/latest",  # raw: SSRF checks come later
                "priority": " 10 ",
                "language": "pt-BR",
                "metadata": {"batch_id": 7, "source": "api"},
            }
        )
    )
    assert request.notification_id == "n-7"
    assert request.callback_url == "http://169.254.169.254/latest"
    assert (request.priority, request.language, request.batch_id) == (10, "pt-BR", "7")
    assert request.metadata == {"batch_id": 7, "source": "api"}


def test_embedded_user_name_does_not_override_variables() -> None:
    message = {**FLAT, "user": {"name": "Someone Else"}}
    assert parse_message(encode(message)).variables["name"] == "Ada"


def test_empty_address_fields_count_as_absent() -> None:
    request = parse_message(encode({**FLAT, "to_email": "", "email": None, "to": ADA}))
    assert request.recipient == ADA


def test_nesting_limit_is_exact() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 2):  # the message and variables are two levels
            value = {"a": value}
        return {**FLAT, "variables": value}

    assert parse_message(encode(nested(32))).request_id == "req-1"
    assert refused(encode(nested(33))).reason is Reason.INVALID_JSON


def test_size_limit_is_exact_and_checked_before_decoding() -> None:
    body = encode(FLAT)
    assert parse_message(body, max_bytes=len(body)).request_id == "req-1"
    assert refused(body, max_bytes=len(body) - 1).reason is Reason.TOO_LARGE
    assert refused(b"\xff" * 300_000).reason is Reason.TOO_LARGE


# --- hostile input ----------------------------------------------------------------------------


def without(*keys: str) -> dict[str, Any]:
    return {k: v for k, v in FLAT.items() if k not in keys}


def deep(levels: int) -> bytes:
    return b'{"request_id":"r","template_code":"t","user_id":"u","variables":' + (
        b'{"a":' * levels + b"1" + b"}" * levels + b"}"
    )


J, M, T = Reason.INVALID_JSON, Reason.INVALID_MESSAGE, Reason.WRONG_TYPE
RI, RM = Reason.RECIPIENT_INVALID, Reason.RECIPIENT_MISSING
HOSTILE: list[tuple[str, bytes, Reason]] = [
    # Not UTF-8 JSON.
    ("empty body", b"", J),
    ("invalid UTF-8", b'{"request_id": "\xff\xfe"}', J),
    ("overlong UTF-8", b'{"request_id": "\xc0\xaf"}', J),
    ("UTF-16", json.dumps(FLAT).encode("utf-16"), J),
    ("lone surrogate escape", b'{"request_id": "\\ud800", "template_code": "t"}', J),
    ("NUL in a string", b'{"request_id": "r", "template_code": "t", "user_id": "\\u0000"}', J),
    ("truncated JSON", encode(FLAT)[:-5], J),
    ("trailing garbage", encode(FLAT) + b"}", J),
    ("single quotes", b"{'request_id': 'r'}", J),
    ("NaN", encode(FLAT)[:-1] + b', "x": NaN}', J),
    ("Infinity", encode(FLAT)[:-1] + b', "x": -Infinity}', J),
    ("float overflow", encode(FLAT)[:-1] + b', "x": 1e999}', J),
    ("huge integer", encode(FLAT)[:-1] + b', "x": ' + b"9" * 5000 + b"}", J),
    ("duplicate top-level key", b'{"request_id": "a", "request_id": "b", "template_code": "t"}', J),
    ("duplicate nested key", encode(FLAT)[:-1] + b', "variables2": {"a": 1, "a": 1}}', J),
    ("10000 nested arrays", b"[" * 10000 + b"]" * 10000, J),
    ("10000 nested objects in variables", deep(10000), J),
    ("40 nested objects in variables", deep(40), J),
    # JSON, but not a message.
    ("array", b"[]", M),
    ("string", b'"str"', M),
    ("number", b"42", M),
    ("null", b"null", M),
    ("missing request_id", encode(without("request_id")), M),
    ("empty request_id", encode({**FLAT, "request_id": ""}), M),
    ("blank request_id", encode({**FLAT, "request_id": "   "}), M),
    ("long request_id", encode({**FLAT, "request_id": "r" * 129}), M),
    ("numeric request_id", encode({**FLAT, "request_id": 5}), M),
    ("request_id with LF", encode({**FLAT, "request_id": "a\nb"}), M),
    ("request_id with U+2028", encode({**FLAT, "request_id": "a\u2028b"}), M),
    ("missing template_code", encode(without("template_code")), M),
    ("template_code path", encode({**FLAT, "template_code": "../admin"}), M),
    ("template_code space", encode({**FLAT, "template_code": "wel come"}), M),
    ("template_code newline", encode({**FLAT, "template_code": "welcome\n"}), M),
    ("template_code too long", encode({**FLAT, "template_code": "t" * 129}), M),
    ("variables array", encode({**FLAT, "variables": ["name"]}), M),
    ("metadata string", encode({**FLAT, "metadata": "b-1"}), M),
    ("priority 11", encode({**FLAT, "priority": 11}), M),
    ("priority -1", encode({**FLAT, "priority": -1}), M),
    ("priority word", encode({**FLAT, "priority": "high"}), M),
    ("priority boolean", encode({**FLAT, "priority": True}), M),
    ("priority float", encode({**FLAT, "priority": 1.5}), M),
    ("language sentence", encode({**FLAT, "language": "English please"}), M),
    ("language number", encode({**FLAT, "language": 5}), M),
    ("user_id boolean", encode({**FLAT, "user_id": True}), M),
    ("user_id list", encode({**FLAT, "user_id": ["u"]}), M),
    ("user_id empty", encode({**FLAT, "user_id": ""}), M),
    ("user_id huge integer", encode({**FLAT, "user_id": 10**200}), M),
    ("user not an object", encode({**FLAT, "user": "u-1"}), M),
    ("user_id and user.id disagree", encode({**FLAT, "user": {"id": "u-2"}}), M),
    ("notification_type number", encode({**FLAT, "notification_type": 1}), M),
    ("batch_id object", encode({**FLAT, "metadata": {"batch_id": {"id": 1}}}), M),
    ("batch_id with CR", encode({**FLAT, "metadata": {"batch_id": "b\r1"}}), M),
    ("envelope data array", encode({"pattern": "email", "data": [FLAT]}), M),
    ("envelope data string", encode({"success": True, "data": json.dumps(FLAT)}), M),
    ("ambiguous envelope", encode({"pattern": "email", "data": FLAT, "template_code": "x"}), M),
    (
        "three envelopes",
        encode({"pattern": 1, "data": {"pattern": 2, "data": {"pattern": 3, "data": FLAT}}}),
        M,
    ),
    ("unknown envelope", encode({"payload": FLAT}), M),
    # Not an email.
    ("notification_type sms", encode({**FLAT, "notification_type": "sms"}), T),
    ("notification_type push padded", encode({**FLAT, "notification_type": " Push "}), T),
    (
        "notificationType sms",
        encode({**without("notification_type"), "notificationType": "sms"}),
        T,
    ),
    ("sms wins over other faults", encode({"request_id": "r", "notification_type": "sms"}), T),
    (
        "sms inside envelope",
        encode({"pattern": "x", "data": {**FLAT, "notification_type": "sms"}}),
        T,
    ),
    # Recipient.
    ("two addresses", encode({**FLAT, "to": "a@example.com,b@example.com"}), RI),
    ("address list", encode({**FLAT, "to": ["a@example.com", "b@example.com"]}), RI),
    ("address number", encode({**FLAT, "email": 5}), RI),
    ("display name", encode({**FLAT, "to_email": "Ada <ada@example.com>"}), RI),
    ("CRLF in address", encode({**FLAT, "to": "ada@example.com\r\nBcc: eve@evil.test"}), RI),
    ("encoded word", encode({**FLAT, "to": "=?utf-8?q?ada?=@example.com"}), RI),
    ("U+2028 in address", encode({**FLAT, "to": "ada@example.com\u2028Bcc: x@evil.test"}), RI),
    ("invalid syntax", encode({**FLAT, "recipient": "ada@"}), RI),
    ("invalid variables.email", encode({**FLAT, "variables": {"email": "not-an-address"}}), RI),
    ("invalid user.email", encode({**FLAT, "user": {"email": "a@b@c.com"}}), RI),
    ("to and to_email disagree", encode({**FLAT, "to": ADA, "to_email": "eve@evil.test"}), RI),
    (
        "to and variables.email disagree",
        encode({**FLAT, "to": ADA, "variables": {"email": "eve@evil.example"}}),
        RI,
    ),
    (
        "user.email and toEmail disagree",
        encode({**FLAT, "toEmail": ADA, "user": {"email": "eve@evil.example"}}),
        RI,
    ),
    ("no address, no user_id", encode(without("user_id")), RM),
    ("null user_id, empty address", encode({**FLAT, "user_id": None, "to": " "}), RM),
]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(body, reason) for _, body, reason in HOSTILE],
    ids=[case_id for case_id, _, _ in HOSTILE],
)
def test_hostile_input_is_refused_with_its_reason(body: bytes, reason: Reason) -> None:
    failure = refused(body)
    assert failure.reason is reason, failure.detail
    assert failure.detail


def test_details_name_fields_but_never_echo_values() -> None:
    secret = "pii-marker"
    cases = [
        {**FLAT, "template_code": f"../{secret}"},
        {**FLAT, "request_id": f"{secret}\n"},
        {**FLAT, "to": f"{secret}@example.com,b@example.com"},
        {**FLAT, "to": f"{secret} <a@example.com>"},
        {**FLAT, "to": ADA, "email": f"{secret}@example.com"},
        {**FLAT, "priority": secret},
    ]
    for case in cases:
        detail = refused(encode(case)).detail
        assert secret not in detail and "example.com" not in detail, detail
    assert refused(encode({**FLAT, "priority": "x"})).detail == "priority: invalid"
    assert refused(encode(without("template_code"))).detail == "template_code: missing"
    assert "to, email" in refused(encode(cases[4])).detail


# --- peek_request_id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (encode(FLAT), "req-1"),
        (encode({"pattern": "email", "data": {"requestId": "r-2"}}), "r-2"),
        (encode(FLAT)[:40], "req-1"),  # truncated: found by key
        (b'\xff{"request_id": "r-3", ', "r-3"),  # invalid UTF-8 elsewhere
        (b'{"request_id": "r\\u00e9"', "r\u00e9"),
        (encode({**FLAT, "request_id": "a\nb"}), None),
        (encode({**FLAT, "request_id": "r" * 129}), None),
        (encode({**FLAT, "request_id": 5}), None),
        (b"[" * 10000, None),
        (b"", None),
        (b"\x00\x01\x02", None),
        (b'{"request_id": "' + b"r" * 300 + b'"', None),
        (b" " * (2 << 20), None),
    ],
)
def test_peek_request_id_is_best_effort(body: bytes, expected: str | None) -> None:
    assert peek_request_id(body) == expected
