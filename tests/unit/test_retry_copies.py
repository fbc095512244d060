"""What the ledger keeps of a retried message (``retry_copies.keep``) and the message rebuilt from
it (``rebuild``); the pipeline keeping a copy only for retries and recording a claim's
redelivery limit without an attempt. Pure: fakes for the ports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pika
from hypothesis import given
from hypothesis import strategies as st

from email_worker.broker.delivery import neutral_properties
from email_worker.broker.retry_copies import keep, rebuild, scalar_headers
from email_worker.broker.settle import ATTEMPTS_HEADER, DEFERRALS_HEADER, FIRST_ATTEMPT_HEADER
from email_worker.disposition import DeadLetter, Retry
from email_worker.ledger.statements import finish_rows
from email_worker.ports import Claim, Delivery, LedgerStatus, MessageProperties, Record, RetryCopy
from schemas.callback import CallbackStatus
from schemas.failures import PermanentFailure, Reason, TransientFailure
from tests.fakes import email_request
from tests.unit.test_pipeline import World, body

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RETRY = Retry(queue_delay=30, delay=27.5, reason=Reason.SMTP_TRANSIENT, detail="451",
              attempts=2, deferrals=3)  # fmt: skip


def delivery(properties: pika.BasicProperties, first: str | None = None) -> Delivery:
    return Delivery(b'{"a": "\xc3\xa9"}', neutral_properties(properties), 7, 1, True, 1, 3, first)


def gateway_properties(**headers: Any) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        correlation_id="corr-1",
        message_id="msg-1",
        priority=9,
        timestamp=1_700_000_000,
        type="email",
        app_id="gateway",
        reply_to="replies",
        user_id="guest",  # the broker refuses a user_id that is not the publisher's
        expiration="60000",  # a re-driven copy does not expire
        headers={"traceparent": TRACEPARENT, "tracestate": "v=1", **headers},
    )


def test_keep_records_the_copy_the_settler_publishes_less_its_expiration() -> None:
    properties = gateway_properties(
        **{"x-death": [{"count": 1, "queue": "email.retry.5000ms"}], "x-first-death-queue": "q"},
        tenant="acme",
        weight=1.5,  # pika decodes AMQP floats but cannot publish one: left out
        flag=True,
    )
    copy = keep(delivery(properties, "2026-01-01T00:00:00.000Z"), RETRY)
    assert copy.due_in == 27.5 and copy.body == b'{"a": "\xc3\xa9"}'
    assert copy.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": "corr-1",
        "message_id": "msg-1",
        "priority": 9,
        "timestamp": 1_700_000_000,
        "type": "email",
        "app_id": "gateway",
        "reply_to": "replies",
        "headers": {
            "traceparent": TRACEPARENT,
            "tracestate": "v=1",
            "tenant": "acme",
            "flag": True,
            ATTEMPTS_HEADER: 2,  # the decision's counts, not the delivery's
            DEFERRALS_HEADER: 3,
            FIRST_ATTEMPT_HEADER: "2026-01-01T00:00:00.000Z",
        },
    }
    json.dumps(copy.properties, allow_nan=False)  # what jsonb will hold


def test_rebuild_gives_back_the_properties_and_fills_the_first_attempt_from_the_ledger() -> None:
    copy = keep(delivery(gateway_properties()), RETRY)  # a first delivery: no first-attempt yet
    first = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    rebuilt = rebuild(copy.properties, first)
    assert rebuilt.delivery_mode == 2 and rebuilt.expiration is None and rebuilt.user_id is None
    assert (rebuilt.correlation_id, rebuilt.priority, rebuilt.reply_to) == ("corr-1", 9, "replies")
    assert rebuilt.headers == {
        "traceparent": TRACEPARENT,
        "tracestate": "v=1",
        ATTEMPTS_HEADER: 2,
        DEFERRALS_HEADER: 3,
        FIRST_ATTEMPT_HEADER: "2026-03-04T05:06:07.890Z",
    }
    rebuilt.encode()  # an AMQP frame can carry it
    kept = rebuild(keep(delivery(gateway_properties(), "earlier"), RETRY).properties, first)
    assert kept.headers is not None and kept.headers[FIRST_ATTEMPT_HEADER] == "earlier"


# What pika may hand over as header values: scalars, bytes, nested tables and arrays; and text
# with every code point, lone surrogates included (UTF-8 cannot carry those).
_text = st.text(st.characters(exclude_categories=()))
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(_text, _values, max_size=8))
def test_any_headers_give_a_jsonb_safe_record_that_amqp_can_carry(
    headers: dict[str, Any],
) -> None:
    kept = scalar_headers(headers)
    text = json.dumps(kept, allow_nan=False, ensure_ascii=False)
    assert "\\u0000" not in text  # jsonb refuses NUL characters
    text.encode()  # and the database takes UTF-8 only
    for name, value in kept.items():
        assert headers[name] == value and type(headers[name]) is type(value)
        assert not name.startswith("x-death")
    properties = rebuild({"headers": kept}, None)
    properties.encode()


def test_rebuild_ignores_what_is_not_a_property() -> None:
    rebuilt = rebuild({"priority": "high", "timestamp": True, "headers": ["x"], "type": 3}, None)
    assert (rebuilt.priority, rebuilt.timestamp, rebuilt.type, rebuilt.headers) == (
        None,
        None,
        None,
        {},
    )


def test_only_a_retry_carries_the_copy_fields_in_the_shared_statement() -> None:
    request = email_request("req-hot")
    claim = Claim(request.request_id, "lease", 1)
    sent = Record(status=LedgerStatus.SENT, callback=CallbackStatus.DELIVERED)
    assert "retry" not in finish_rows([(claim, request, sent)])
    retry = Record(status=LedgerStatus.PENDING, callback=None, retry=RetryCopy(1, b"\0\xff", {}))
    (row,) = json.loads(finish_rows([(claim, request, retry)]))
    assert (row["retry_in"], row["retry_body"], row["retry_props"]) == (1, "AP8=", {})


def test_a_retry_decision_keeps_the_copy_with_the_outcome() -> None:
    world = World(TransientFailure(Reason.SMTP_TRANSIENT, "451"))
    raw = body()
    props = MessageProperties(headers={"traceparent": TRACEPARENT})
    decision = world.handler.handle(Delivery(raw, props, 1, 1, False, 0, 0, None))
    assert isinstance(decision, Retry)
    (record,) = world.ledger.rows["req-1"].records
    assert record.retry is not None and record.retry.body == raw
    assert record.retry.due_in == decision.delay
    assert record.retry.properties["headers"] == {
        "traceparent": TRACEPARENT,
        ATTEMPTS_HEADER: 1,
        DEFERRALS_HEADER: 0,
    }


def test_delivered_and_dead_lettered_outcomes_keep_no_copy() -> None:
    world = World(PermanentFailure(Reason.RECIPIENT_REJECTED, "550"))
    raw = body()
    world.handler.handle(Delivery(raw, MessageProperties(), 1, 1, False, 0, 0, None))
    world.handler.handle(Delivery(body(request_id="req-2"), MessageProperties(), 2, 1,
                                   False, 0, 0, None))  # fmt: skip
    records = world.ledger.rows["req-1"].records + world.ledger.rows["req-2"].records
    assert [r.status for r in records] == [LedgerStatus.FAILED, LedgerStatus.SENT]
    assert all(r.retry is None for r in records)


def test_a_claim_past_the_redelivery_limit_is_failed_without_an_attempt() -> None:
    world = World()
    limit = PermanentFailure(Reason.REDELIVERY_LIMIT, "redelivered 6 times without an outcome")
    world.ledger.claim_failure = limit
    raw = body()
    decision = world.handler.handle(Delivery(raw, MessageProperties(), 1, 1, True, 0, 0, None))
    assert decision == DeadLetter(Reason.REDELIVERY_LIMIT, limit.detail, 1)
    assert world.mailer.sent == [] and world.templates.calls == 0
    (record,) = world.ledger.rows["req-1"].records
    assert (record.status, record.callback, record.reason) == (
        LedgerStatus.FAILED,
        CallbackStatus.FAILED,
        Reason.REDELIVERY_LIMIT,
    )
    assert world.ledger.outbox == [("req-1", "failed")]


def test_a_header_pika_decoded_as_its_own_long_is_kept_at_once() -> None:
    # pika decodes an AMQP long (a quorum queue's x-delivery-count among them) as an int
    # subclass; checking its range with `in range(...)` scanned 2**64 elements.
    headers = {"x-delivery-count": pika.compat.long(1), "shard": pika.compat.long(7)}
    kept = scalar_headers(headers)
    assert kept == {"shard": 7} and type(kept["shard"]) is int
