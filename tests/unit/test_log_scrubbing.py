"""No address in any field of any log line (RELIABILITY rule 18), internationalised ones included:
the message, its arguments, exception text, the request context and every ``extra`` field."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import idna
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from email_worker.logs import json_handler, request_context, scrub
from email_worker.ports import Delivery, MessageProperties
from schemas.addresses import validate_address
from schemas.failures import PermanentFailure
from tests.unit.test_pipeline import World, body

_LOCAL = st.text(
    st.sampled_from(list("abcXYZ019.!#$%&'*+/=?^_`{|}~-") + list("äöüéßçøñ用户中文ïå\u0301")),
    min_size=1,
    max_size=24,
)
_LABEL = st.text(st.sampled_from(list("abz09-") + list("äöüé例子")), min_size=1, max_size=10)
_TLD = st.sampled_from(["com", "de", "test", "рф", "xn--p1ai"])


def _accepted(address: str) -> bool:
    try:
        validate_address(address)
    except PermanentFailure:
        return False
    return True


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """An address the worker accepts, in any of the spellings it accepts (Unicode domain,
    punycode domain, ideographic full stop as a dot)."""
    domain = ".".join([*draw(st.lists(_LABEL, min_size=1, max_size=3)), draw(_TLD)])
    spelling = draw(st.sampled_from(["unicode", "punycode", "ideographic"]))
    if spelling == "punycode":
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            assume(False)
    elif spelling == "ideographic":
        domain = domain.replace(".", "\u3002")
    local = draw(_LOCAL)
    assume(local.strip("*"))  # "*@x.com" is a substring of the mask "***@x.com": no leak
    address = f"{local}@{domain}"
    assume(_accepted(address))
    return address


@contextmanager
def captured(logger: logging.Logger) -> Iterator[io.StringIO]:
    """The JSON lines ``logger`` writes, through the worker's own handler."""
    stream = io.StringIO()
    handler = json_handler(stream)
    saved = (logger.handlers, logger.propagate, logger.level)
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def assert_absent(address: str, output: str) -> None:
    lines = output.splitlines()
    assert lines
    for line in lines:
        assert address not in line
        for text in _strings(json.loads(line)):  # JSON escapes non-ASCII: read it back too
            assert address not in text, text


def _log_everywhere(logger: logging.Logger, address: str, around: str) -> None:
    text = f"{around}{address}{around}"
    with request_context(address, text):
        logger.info("to %s: %s", address, text, extra={"peer": text, "ids": [{text: address}]})
        try:
            raise ValueError(f"cannot send to {address}")
        except ValueError:
            logger.exception("failed for %s", text)
    with request_context("r-1", "c-1"):
        logger.warning(text, extra={"request_id": address, "correlation_id": address})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(address=addresses(), around=st.sampled_from(["", " ", "x", "<", '"', "\u00a0", ", "]))
def test_no_log_line_holds_an_address_in_any_field(address: str, around: str) -> None:
    logger = logging.getLogger("tests.scrub")
    with captured(logger) as stream:
        _log_everywhere(logger, address, around)

    assert_absent(address, stream.getvalue())
    assert_absent(validate_address(address), stream.getvalue())


def test_scrubbing_keeps_the_domain_and_masks_url_passwords() -> None:
    assert scrub("to ädä@exämple.com.") == "to ***@exämple.com."
    assert scrub("https://user:s3cret@host.test/x") == "https://user:***@host.test/x"
    assert scrub("no address here") == "no address here"


def _amqp(raw: bytes, correlation_id: str) -> Delivery:
    properties = MessageProperties(correlation_id=correlation_id)
    return Delivery(raw, properties, 1, 1, False, 0, 0, None)


def test_an_address_as_correlation_id_is_not_logged_on_any_path() -> None:
    address = "ada.lovelace@exämple.com"
    cases = [
        body(correlation_id=address),  # valid, id in the body
        body(template_code="missing"),  # valid, fails later; id from the AMQP property
        b'{"request_id": "r-2", "template_code": 5}',  # invalid; id from the AMQP property
        json.dumps({"request_id": "r-3", "correlation_id": address}).encode(),  # invalid
    ]
    world = World()
    with captured(logging.getLogger("email_worker")) as stream:
        for raw in cases:
            world.handler.handle(_amqp(raw, address))

    assert stream.getvalue().count("\n") >= len(cases)
    assert_absent(address, stream.getvalue())
