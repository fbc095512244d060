"""Hostile input for the parsers fed from outside: raw DSN/ARF mail (whoever can mail the
bounce mailbox writes it) and provider JSON. Whatever arrives, the parsers return reports or
raise ``Malformed``, never anything else, their details hold no address, and their time grows
linearly with the input (RELIABILITY rule 19)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.reports.dsn import mime_reports
from email_worker.reports.model import Malformed, Report
from email_worker.reports.postmark import postmark_reports
from email_worker.reports.sendgrid import sendgrid_reports
from email_worker.reports.ses import ses_reports
from tests.support import webhook_payloads as p
from tests.support.growth import assert_linear

ADA, MID = "ada@example.org", "<3f2a9c@acme.test>"
_PIECES = [
    b"\r\n",
    b"\n",
    b"--8A1C4E8E0.1716649178/mx.example.org",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
    b"Content-Type: message/delivery-status\r\n\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: text/rfc822-headers\r\n\r\n",
    b"Content-Type: message/feedback-report\r\n\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"Action: failed\r\nStatus: 5.1.1\r\n",
    b"Final-Recipient: rfc822; ",
    b"ada@example.org",
    b"Message-ID: <x@y>\r\n",
    b'; boundary="',
    b"=?utf-8?q?=C3=A9?=",
    b"\xff\xfe",
    b"\x00",
    b"\t ",
]


def _checked(reports: list[Report]) -> None:
    for report in reports:
        assert "ada@" not in report.summary
        assert len(report.summary) <= 160


def _mutated() -> st.SearchStrategy[bytes]:
    """Real reports cut, spliced and salted with the bytes MIME parsers care about."""
    base = st.sampled_from([p.dsn(ADA, MID), p.arf(MID, ADA), p.dsn(ADA, MID, "4.2.2")])
    cuts = st.tuples(base, st.integers(0, 2000), st.lists(st.sampled_from(_PIECES), max_size=30))
    return cuts.map(lambda t: t[0][: t[1]] + b"".join(t[2]) + t[0][t[1] :])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _mutated(), st.binary(max_size=2000), st.lists(st.sampled_from(_PIECES)).map(b"".join)
    )
)
def test_hostile_mime_never_crashes_the_parser(raw: bytes) -> None:
    with contextlib.suppress(Malformed):
        _checked(mime_reports(raw))


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = st.sampled_from(
    [
        "email",
        "event",
        "type",
        "reason",
        "status",
        "smtp-id",
        "sg_message_id",
        "RecordType",
        "Type",
        "Email",
        "Recipient",
        "SuppressSending",
        "notificationType",
        "bounce",
        "mail",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_FIELDS, _JSONISH, max_size=8), max_size=5))
def test_hostile_json_is_reports_or_malformed(documents: list[dict[str, object]]) -> None:
    for parse, body in (
        (sendgrid_reports, json.dumps(documents).encode()),
        (postmark_reports, json.dumps(documents[0] if documents else {}).encode()),
        (lambda b: ses_reports(b.decode()), json.dumps(documents[0] if documents else []).encode()),
    ):
        with contextlib.suppress(Malformed):
            _checked(parse(body))


def _quietly(raw: bytes) -> object:
    try:
        return mime_reports(raw)
    except Malformed:
        return None


def _dsn_with(recipients: int) -> bytes:
    block = b"Final-Recipient: rfc822; ada@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    head, _, tail = p.dsn(ADA, MID).partition(b"Final-Recipient")
    return head + block * recipients + b"Final-Recipient" + tail


_REPORT = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b"
SHAPES: dict[str, Callable[[int], bytes]] = {
    "recipient blocks": _dsn_with,
    "header lines": lambda n: b"X-Header: value\r\n" * n + p.dsn(ADA, MID),
    "one long line": lambda n: b"a" * n,
    "carriage returns": lambda n: b"\r" * n,
    "folded parameters": lambda n: _REPORT + b';\r\n a="b"' * n + b"\r\n\r\n--b--\r\n",
    "unclosed quote": lambda n: b'Content-Type: multipart/report; report-type="' + b"a" * n,
    "parts without type": lambda n: _REPORT + b"\r\n\r\n" + b"--b\r\n\r\nbody\r\n" * n,
    "boundary lookalikes": lambda n: p.dsn(ADA, MID).replace(
        b"Diagnostic", b"--8A1C4E8E0 " * n + b"D"
    ),
    "long diagnostic": lambda n: p.dsn(ADA, MID).replace(b"Recipient address", b"x " * n),
}


@pytest.mark.parametrize("make", SHAPES.values(), ids=SHAPES.keys())
def test_mime_reports_in_linear_time(make: Callable[[int], bytes]) -> None:
    assert_linear(_quietly, make, start=256)


def test_too_many_boundaries_or_parts_are_refused_before_parsing() -> None:
    nested = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (k, k) for k in range(40)
    )
    with pytest.raises(Malformed, match="boundaries"):
        mime_reports(nested)
    rfc822 = b"Content-Type: message/rfc822\r\n\r\n" * 2000
    with pytest.raises(Malformed, match="parts"):
        mime_reports(rfc822)
