"""Mailgun's MIME sending endpoint as a relay: our raw MIME message as a file upload.

Sources (Mailgun's published documentation):
- ``POST /v3/{domain_name}/messages.mime``, ``multipart/form-data`` with ``to`` (required, the
  recipient) and ``message`` (required, the MIME string "as a file upload"); HTTP basic auth
  with the user ``api`` and the API key; base URLs ``https://api.mailgun.net`` (US) and
  ``https://api.eu.mailgun.net`` (EU); answer ``{"id": ..., "message": "Queued. Thank you."}``:
  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages/post-v3--domain-name--messages-mime
  and https://documentation.mailgun.com/docs/mailgun/api-reference/authentication/
- answers: 400 with a human-readable ``message``, 401/403 authentication, 404 (a domain or
  endpoint that does not exist), 429 rate limits ("retry as defined in the response"), 500:
  https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses

The message is exactly what the SMTP adapter would send (``render.mime.build_message``, then
the DKIM signer when one is configured). Mailgun's 400 gives no code, only text that may echo
an address: the detail is the status alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from email_worker.ports import Accepted, OutgoingEmail
from email_worker.providers.answers import (
    Refusal,
    accepted_reply,
    failure,
    provider_id,
    retry_after,
)
from email_worker.providers.exchange import ProviderHttp
from email_worker.render.mime import build_message

NAME = "mailgun"
USER = "api"

Signer = Callable[[bytes], bytes]


class MailgunTransport:
    """Thread-safe: it keeps no state between requests."""

    def __init__(
        self,
        domain: str,
        api_key: str,
        http: ProviderHttp,
        *,
        sign: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http, self._sign, self._clock = http, sign, clock
        self._path = f"/v3/{quote(domain, safe='')}/messages.mime"
        self._auth = (USER, api_key)

    def send(self, email: OutgoingEmail) -> Accepted:
        """Send ``email`` once; the ``id`` answered is the provider's id. Raises
        ``schemas.failures`` errors only (``providers.answers``, ``providers.exchange``)."""
        message = build_message(email)  # every header checked first: UNSAFE_CONTENT
        if self._sign is not None:
            message = self._sign(message)
        answer = self._http.post(
            self._path,
            data={"to": email.recipient},
            files={"message": ("message.mime", message, "message/rfc822")},
            auth=self._auth,
        )
        if 200 <= answer.status <= 299:
            document = answer.json()
            found = provider_id(document.get("id") if isinstance(document, dict) else None)
            return Accepted(accepted_reply(answer.status, NAME, found), found)
        wait = retry_after(answer.headers.get("Retry-After"), self._clock())
        raise failure(Refusal(NAME, answer.status, retry_after=wait))

    def close(self) -> None:
        self._http.close()
