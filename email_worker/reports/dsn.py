"""Raw bounce and complaint reports as mail delivers them: RFC 3464 delivery status
notifications and RFC 5965 abuse (feedback) reports, both ``multipart/report`` (RFC 6522).

Sources (the standards themselves):
- ``multipart/report`` with its ``report-type`` parameter, the human part, the machine part,
  then the original message or its headers: https://www.rfc-editor.org/rfc/rfc6522
- DSN: ``message/delivery-status`` holds one per-message block (``Reporting-MTA``,
  ``Original-Envelope-Id``) then one block per recipient (``Final-Recipient``,
  ``Original-Recipient``, ``Action`` failed | delayed | delivered | relayed | expanded,
  ``Status``, ``Diagnostic-Code``): https://www.rfc-editor.org/rfc/rfc3464
- status codes (class 5 permanent, 4 persistent transient): https://www.rfc-editor.org/rfc/rfc3463
- ARF: ``report-type=feedback-report``, ``message/feedback-report`` with ``Feedback-Type``
  (abuse, fraud, virus, other, not-spam, auth-failure: RFC 5965 section 7.3 and RFC 6591) and an
  optional ``Original-Rcpt-To``, then the complained-of message (``message/rfc822``) or its
  headers (``text/rfc822-headers``): https://www.rfc-editor.org/rfc/rfc5965

``Action: failed`` with a 5.x.x status is a hard bounce, with 4.x.x a soft one; other actions
are not reports. A feedback report of type abuse, fraud or other is a complaint; not-spam,
virus and auth-failure are not the recipient asking to stop. Our ``Message-ID`` comes from the
original message or headers returned in the third part.

Hostile input: the body is size-capped by the caller, and before the stdlib parser sees it
the number of MIME boundaries and Content-Type fields is bounded (the parser checks every line
against every open boundary, so nesting depth times lines would otherwise be its cost). The
parser runs with the ``compat32`` policy, which builds no structured header objects. Any
exception it raises is ``Malformed``.
"""

from __future__ import annotations

import email
import email.parser
from email.message import Message

from email_worker.reports.model import Kind, Malformed, Report, address, enhanced_code, ids, text
from email_worker.reports.model import message_id as as_message_id

MAX_BOUNDARIES = 16
MAX_CONTENT_TYPES = 64
MAX_RECIPIENTS = 100
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})


def parse_report(raw: bytes) -> tuple[str, Message]:
    """``(report-type, message)`` of a ``multipart/report``. Raises ``Malformed`` for anything
    else, for a body too convoluted to parse cheaply, or when the parser fails."""
    lowered = raw.lower()
    if lowered.count(b"boundary") > MAX_BOUNDARIES:
        raise Malformed("too many MIME boundaries for a report")
    if lowered.count(b"content-type") > MAX_CONTENT_TYPES:
        raise Malformed("too many MIME parts for a report")
    try:
        message = email.message_from_bytes(raw)
        kind = message.get_content_type()
        report_type = message.get_param("report-type")
        parts = message.get_payload() if message.is_multipart() else None
    except Exception as exc:  # the stdlib parser on hostile MIME: whatever it raises
        raise Malformed("the body is not a parsable MIME message") from exc
    if kind != "multipart/report" or not isinstance(report_type, str) or not parts:
        raise Malformed("the body is not a multipart/report")
    return report_type.lower(), message


def mime_reports(raw: bytes) -> list[Report]:
    """The reports in a raw DSN or ARF message. Raises ``Malformed`` for any other body."""
    report_type, message = parse_report(raw)
    if report_type == "delivery-status":
        return dsn_reports(message)
    if report_type == "feedback-report":
        return arf_reports(message)
    raise Malformed("the report is neither delivery-status nor feedback-report")


def _parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    return [part for part in payload if isinstance(part, Message)][:MAX_CONTENT_TYPES]


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return value if isinstance(value, str) else None  # a Header object: undecodable bytes


def _original_ids(message: Message) -> tuple[str, ...]:
    """Our Message-ID from the returned message (``message/rfc822``) or headers."""
    for part in _parts(message):
        kind = part.get_content_type()
        headers: object = None
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner else None
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            body = part.get_payload()
            if isinstance(body, str):
                headers = email.parser.HeaderParser().parsestr(body[:65536])
        if isinstance(headers, Message):
            found = as_message_id(_field(headers, "Message-ID"))
            if found:
                return (found,)
    return ()


def _machine_part(message: Message, kind: str) -> list[Message]:
    for part in _parts(message):
        if part.get_content_type() == kind:
            blocks = part.get_payload()
            if isinstance(blocks, list):
                return [block for block in blocks if isinstance(block, Message)]
    raise Malformed(f"the report has no {kind} part")


def dsn_reports(message: Message) -> list[Report]:
    """One report per recipient block whose ``Action`` is failed."""
    blocks = _machine_part(message, "message/delivery-status")
    if not blocks:
        raise Malformed("the delivery-status part is empty")
    ours = _original_ids(message)
    envelope = ids(_field(blocks[0], "Original-Envelope-Id"))
    reports = []
    for block in blocks[1 : MAX_RECIPIENTS + 1]:
        action = (_field(block, "Action") or "").strip().lower()
        status = enhanced_code(_field(block, "Status"))
        if action != "failed" or status is None or status[0] not in "45":
            continue
        kind = Kind.HARD_BOUNCE if status[0] == "5" else Kind.SOFT_BOUNCE
        recipient = address(_field(block, "Original-Recipient")) or address(
            _field(block, "Final-Recipient")
        )
        detail = text(_field(block, "Diagnostic-Code"))
        reports.append(Report(kind, recipient, status, detail, ours, envelope))
    return reports


def arf_reports(message: Message) -> list[Report]:
    """The complaint of a feedback report, when its type is one (see the module docstring)."""
    blocks = _machine_part(message, "message/feedback-report")
    if not blocks:
        raise Malformed("the feedback-report part is empty")
    feedback = (_field(blocks[0], "Feedback-Type") or "").strip().lower()
    if feedback not in COMPLAINT_TYPES:
        return []
    recipient = address(_field(blocks[0], "Original-Rcpt-To"))
    envelope = ids(_field(blocks[0], "Original-Envelope-Id"))
    return [Report(Kind.COMPLAINT, recipient, feedback, "", _original_ids(message), envelope)]
