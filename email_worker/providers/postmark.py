"""Postmark's Email API as a relay: the same subject, parts and headers as JSON.

Sources (Postmark's published documentation):
- ``POST /email`` with ``Accept`` and ``Content-Type: application/json`` and
  ``X-Postmark-Server-Token``; the body's ``From`` (``Full Name <sender@domain.com>``, the
  name's punctuation escaped), ``To``, ``Subject``, ``HtmlBody``, ``TextBody``, ``ReplyTo``,
  ``Headers`` (``[{"Name", "Value"}]``) and ``MessageStream`` (``outbound``: the default
  transactional stream); answer ``{"To", "SubmittedAt", "MessageID", "ErrorCode": 0,
  "Message": "OK"}``: https://postmarkapp.com/developer/api/email-api and
  https://postmarkapp.com/developer/user-guide/sending-email/sending-with-api
- status codes (401 a missing or wrong token, 404, 413 too large, 422 with ``{"ErrorCode",
  "Message"}``, 429 rate limit, 500, 503) and the ``ErrorCode`` table (10 bad or missing API
  token, 100 maintenance, 300 invalid email request, 400 sender signature not found, 401 sender
  signature not confirmed, 402 invalid JSON, 403 incompatible JSON, 405 not allowed to send,
  406 inactive recipient, 409 JSON required, 412 account is pending, 413 account may not send,
  429 rate limit exceeded): https://postmarkapp.com/developer/api/overview#error-codes
- 422 explained: https://postmarkapp.com/support/article/troubleshooting-422-unprocessable-entity-errors

``MessageStream`` is ``outbound`` unless the relay URL says ``?stream=NAME`` (a broadcast
stream for bulk mail, say). Postmark builds and DKIM-signs the MIME itself (with the domain
verified in its account): our DKIM signer does not apply. An inactive recipient (406: it bounced
or complained before) is a permanent refusal of the recipient.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from email_worker.ports import Accepted, OutgoingEmail
from email_worker.providers.answers import (
    CodeKind,
    Refusal,
    accepted_reply,
    failure,
    provider_id,
    retry_after,
)
from email_worker.providers.exchange import Answer, ProviderHttp
from email_worker.providers.message import body_parts, extra_headers, mailbox, validated
from schemas.failures import PermanentFailure, Reason

NAME = "postmark"
PATH = "/email"
DEFAULT_STREAM = "outbound"
TOKEN_HEADER = "X-Postmark-Server-Token"  # noqa: S105 - a header name
# ErrorCode by what it means here; any other code goes by the HTTP status (422: the message).
KINDS: dict[int, CodeKind] = {
    10: CodeKind.ACCOUNT,
    100: CodeKind.UNAVAILABLE,
    400: CodeKind.ACCOUNT,
    401: CodeKind.ACCOUNT,
    405: CodeKind.ACCOUNT,
    406: CodeKind.RECIPIENT,
    412: CodeKind.ACCOUNT,
    413: CodeKind.ACCOUNT,
    429: CodeKind.THROTTLE,
}


class PostmarkTransport:
    """Thread-safe: it keeps no state between requests."""

    def __init__(
        self,
        server_token: str,
        http: ProviderHttp,
        *,
        stream: str = DEFAULT_STREAM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http, self._stream, self._clock = http, stream, clock
        self._headers = {TOKEN_HEADER: server_token, "Content-Type": "application/json"}

    def send(self, email: OutgoingEmail) -> Accepted:
        """Send ``email`` once; the ``MessageID`` answered is the provider's id. Raises
        ``schemas.failures`` errors only (``providers.answers``, ``providers.exchange``)."""
        body = json.dumps(email_body(email, self._stream)).encode("utf-8")
        answer = self._http.post(PATH, content=body, headers=self._headers)
        document = answer.json()
        code = document.get("ErrorCode") if isinstance(document, dict) else None
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        if 200 <= answer.status <= 299 and not code:  # an error code in a 200 is an error
            found = provider_id(document.get("MessageID") if isinstance(document, dict) else None)
            return Accepted(accepted_reply(answer.status, NAME, found), found)
        raise failure(self._refusal(answer, code))

    def close(self) -> None:
        self._http.close()

    def _refusal(self, answer: Answer, code: int | None) -> Refusal:
        # A 200 carrying an ErrorCode is read as the 422 Postmark documents for its errors.
        status = 422 if 200 <= answer.status <= 299 else answer.status
        wait = retry_after(answer.headers.get("Retry-After"), self._clock())
        shown = None if code is None else str(code)
        return Refusal(NAME, status, shown, None if code is None else KINDS.get(code), wait)


def email_body(email: OutgoingEmail, stream: str) -> dict[str, Any]:
    """The Email API body of ``email`` (its headers checked as ``render.mime`` checks them)."""
    validated(email)
    parts = dict(body_parts(email))
    if not parts:
        raise PermanentFailure(Reason.MESSAGE_REJECTED, "empty body: Postmark needs a part")
    body: dict[str, Any] = {
        "From": mailbox(email.sender, email.sender_name),
        "To": email.recipient,
        "Subject": email.content.subject,
        "Headers": [{"Name": name, "Value": value} for name, value in extra_headers(email)],
        "MessageStream": stream,
    }
    if "text/html" in parts:
        body["HtmlBody"] = parts["text/html"]
    if "text/plain" in parts:
        body["TextBody"] = parts["text/plain"]
    if email.reply_to is not None:
        body["ReplyTo"] = mailbox(email.reply_to.address, email.reply_to.name)
    return body
