"""The 406 reply parser behind the queue probe: the reply texts RabbitMQ 3.10.8 sends (copied
from this machine's broker), and any text at all from outside."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from email_worker.broker.probe import Inequivalence, argument_value, parse_inequivalence

Q = "for queue 'gw.email.queue' in vhost '/'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' {Q}: received none but "
            "current is the value '60000' of type 'signedint'",
            Inequivalence("x-message-ttl", "60000", "signedint"),
        ),
        (
            f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' {Q}: received the value "
            "'quorum' of type 'longstr' but current is none",
            Inequivalence("x-queue-type", None, None),
        ),
        (
            f"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' {Q}: received '6' but "
            "current is '5'",
            Inequivalence("x-delivery-limit", "5", None),
        ),
        (
            f"PRECONDITION_FAILED - inequivalent arg 'durable' {Q}: received 'false' but current "
            "is 'true'",
            Inequivalence("durable", "true", None),
        ),
        (
            f"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' {Q}: received none "
            "but current is the value '' of type 'longstr'",
            Inequivalence("x-dead-letter-exchange", "", "longstr"),
        ),
        (  # a value holding the separator itself: the first separator splits
            f"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' {Q}: received none "
            "but current is the value 'a' but current is 'b' of type 'longstr'",
            Inequivalence("x-dead-letter-exchange", "a' but current is 'b", "longstr"),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': "
            "received 'direct' but current is 'topic'",
            Inequivalence("type", "topic", None),
        ),
        (  # a truncated reply (AMQP short strings stop at 255 bytes)
            f"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' {Q}: received none "
            "but current is the value 'eeeeeeeeeeee...",
            None,
        ),
        ("NOT_FOUND - no queue 'q' in vhost '/'", None),
        (
            "PRECONDITION_FAILED - invalid arg 'x-max-age' of queue type rabbit_classic_queue",
            None,
        ),
        ("", None),
    ],
)
def test_reply_texts_of_rabbitmq_3_10(text: str, expected: Inequivalence | None) -> None:
    assert parse_inequivalence(text) == expected


@given(st.text())
def test_any_text_parses_or_is_refused_without_raising(text: str) -> None:
    found = parse_inequivalence(text)
    assert found is None or isinstance(found, Inequivalence)
    if found is not None:
        assert argument_value(found) is None or found.current is not None


_NAME = st.text(st.characters(exclude_characters="'"), max_size=40)
_VALUE = st.text(max_size=60)


@given(_NAME, _VALUE, st.sampled_from(["signedint", "long", "longstr", "bool"]))
def test_the_current_value_and_type_come_back_whatever_the_value_holds(
    argument: str, value: str, kind: str
) -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg '{argument}' for queue 'q' in vhost '/': "
        f"received none but current is the value '{value}' of type '{kind}'"
    )
    assert parse_inequivalence(text) == Inequivalence(argument, value, kind)


@pytest.mark.parametrize(
    ("current", "kind", "value"),
    [
        ("60000", "signedint", 60000),
        ("9000000000", "long", 9000000000),
        ("7", "short", 7),
        ("reject-publish", "longstr", "reject-publish"),
        ("", "longstr", ""),
        ("true", "bool", True),
        ("false", "bool", False),
        ("1.5", "double", None),  # pika cannot send a float: the probe stops there
        ("{}", "table", None),
        ("x", "signedint", None),
        ("5", None, None),  # a bare value: the type is unknown
    ],
)
def test_argument_values_pika_can_send_again(current: str, kind: str | None, value: object) -> None:
    found = argument_value(Inequivalence("x-arg", current, kind))
    assert found == value and type(found) is type(value)
