"""Twilio SendGrid v3 Mail Send as a relay: the same subject, parts and headers as JSON.

Sources (SendGrid's published documentation and OpenAPI description):
- ``POST /v3/mail/send`` with ``Authorization: Bearer <API key>``; the body's
  ``personalizations[].to[].email``, ``from`` (``email``, ``name``), ``reply_to``, ``subject``,
  ``content[]`` (``type``, ``value``, each at least one character; ``text/plain`` before
  ``text/html``) and ``headers`` (a JSON object), where ``x-sg-id``, ``x-sg-eid``,
  ``received``, ``dkim-signature``, ``Content-Type``, ``Content-Transfer-Encoding``, ``To``,
  ``From``, ``Subject``, ``Reply-To``, ``CC`` and ``BCC`` may not be set; ``202 Accepted``;
  errors ``{"errors": [{"message", "field", "help"}]}`` with 400, 401, 403, 404, 405, 413, 500:
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send and
  https://github.com/twilio/sendgrid-oai (``spec/json/tsg_mail_v3.json``)
- the errors of Mail Send (all 400, each naming a ``field``):
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
- ``X-Message-Id`` in the answer: the id its Event Webhook's ``sg_message_id`` begins with:
  https://www.twilio.com/docs/sendgrid/glossary/x-message-id
- 429 with ``X-RateLimit-Reset`` (a Unix time):
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits

Our ``Message-ID``, ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` go in ``headers`` (none
is reserved). SendGrid builds and DKIM-signs the MIME itself (with the domain authenticated in
its account): our DKIM signer does not apply. The field path of an error (e.g.
``personalizations.0.to.0.email``) is its code here: an error about ``personalizations`` is
about the recipient.
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
    reset_after,
    retry_after,
)
from email_worker.providers.exchange import Answer, ProviderHttp
from email_worker.providers.message import body_parts, extra_headers, validated
from schemas.failures import PermanentFailure, Reason

NAME = "sendgrid"
PATH = "/v3/mail/send"


class SendGridTransport:
    """Thread-safe: it keeps no state between requests."""

    def __init__(
        self, api_key: str, http: ProviderHttp, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._http, self._clock = http, clock
        self._auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def send(self, email: OutgoingEmail) -> Accepted:
        """Send ``email`` once; the ``X-Message-Id`` answered is the provider's id. Raises
        ``schemas.failures`` errors only (``providers.answers``, ``providers.exchange``)."""
        body = json.dumps(mail_send_body(email)).encode("utf-8")
        answer = self._http.post(PATH, content=body, headers=self._auth)
        if 200 <= answer.status <= 299:
            found = provider_id(answer.headers.get("X-Message-Id"))
            return Accepted(accepted_reply(answer.status, NAME, found), found)
        raise failure(self._refusal(answer))

    def close(self) -> None:
        self._http.close()

    def _refusal(self, answer: Answer) -> Refusal:
        field = error_field(answer)
        kind = CodeKind.RECIPIENT if field and field.startswith("personalizations") else None
        now = self._clock()
        wait = retry_after(answer.headers.get("Retry-After"), now)
        if wait is None:
            wait = reset_after(answer.headers.get("X-RateLimit-Reset"), now)
        return Refusal(NAME, answer.status, field, kind, wait)


def mail_send_body(email: OutgoingEmail) -> dict[str, Any]:
    """The Mail Send body of ``email`` (its headers checked as ``render.mime`` checks them)."""
    validated(email)
    sender: dict[str, str] = {"email": email.sender}
    if email.sender_name:
        sender["name"] = email.sender_name
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": email.recipient}]}],
        "from": sender,
        "subject": email.content.subject,
        "content": [{"type": kind, "value": value} for kind, value in body_parts(email)],
        "headers": dict(extra_headers(email)),
    }
    if not body["content"]:
        raise PermanentFailure(Reason.MESSAGE_REJECTED, "empty body: SendGrid needs a part")
    if email.reply_to is not None:
        reply_to = {"email": email.reply_to.address}
        if email.reply_to.name:
            reply_to["name"] = email.reply_to.name
        body["reply_to"] = reply_to
    return body


def error_field(answer: Answer) -> str | None:
    """The ``field`` of the first error that names one (a JSON path, never an address)."""
    document = answer.json()
    errors = document.get("errors") if isinstance(document, dict) else None
    for error in errors if isinstance(errors, list) else []:
        field = error.get("field") if isinstance(error, dict) else None
        if isinstance(field, str) and field and field != "null":
            return field[:64]
    return None
