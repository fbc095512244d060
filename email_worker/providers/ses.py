"""Amazon SES v2 ``SendEmail`` as a relay: our raw MIME message, signed with SigV4 by botocore.

Sources (AWS's published documentation, and the service model botocore ships):
- the operation: ``POST /v2/email/outbound-emails``, JSON ``FromEmailAddress``,
  ``Destination.ToAddresses``, ``Content.Raw.Data`` (the whole message, base64), answer
  ``{"MessageId": ...}``; its errors ``TooManyRequestsException`` (429),
  ``LimitExceededException``, ``AccountSuspendedException``, ``SendingPausedException``,
  ``MessageRejected``, ``MailFromDomainNotVerifiedException``, ``BadRequestException`` (400)
  and ``NotFoundException`` (404):
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html,
  https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_RawMessage.html and
  ``botocore/data/sesv2/2019-09-27/service-2.json`` (protocol rest-json, signing name ``ses``)
- no SMTPUTF8: a destination's local part must be 7-bit ASCII (the ``Destination`` shape)
- a rest-json error names its type in the ``x-amzn-ErrorType`` header (``Type:uri``) or the
  body's ``code``/``__type`` (botocore's ``RestJSONParser`` reads them in that order)
- sending quotas answer ``ThrottlingException`` ("Maximum sending rate exceeded", "Daily
  message quota exceeded"):
  https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html
- Signature Version 4 (never written by hand here: ``botocore.auth.SigV4Auth``):
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

The message is exactly what the SMTP adapter would send (``render.mime.build_message``, then
the DKIM signer when one is configured); SES adds its own headers and DKIM signature.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

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
from email_worker.render.mime import build_message
from schemas.failures import PermanentFailure, Reason

NAME = "ses"
PATH = "/v2/email/outbound-emails"
SIGNING_NAME = "ses"  # the service model's signingName (its endpoint prefix is "email")
# Error types by what they mean here; the rest go by their HTTP status.
KINDS: dict[str, CodeKind] = {
    "TooManyRequestsException": CodeKind.THROTTLE,
    "ThrottlingException": CodeKind.THROTTLE,
    "LimitExceededException": CodeKind.THROTTLE,  # a sending quota: wait, never dead-letter
    "MessageRejected": CodeKind.MESSAGE,
    "BadRequestException": CodeKind.MESSAGE,
    "AccountSuspendedException": CodeKind.ACCOUNT,
    "SendingPausedException": CodeKind.ACCOUNT,
    "MailFromDomainNotVerifiedException": CodeKind.ACCOUNT,
    "NotFoundException": CodeKind.ACCOUNT,  # e.g. a configuration set that does not exist
    "AccessDeniedException": CodeKind.ACCOUNT,
    "UnrecognizedClientException": CodeKind.ACCOUNT,
    "InvalidSignatureException": CodeKind.ACCOUNT,
    "IncompleteSignature": CodeKind.ACCOUNT,
    "InvalidClientTokenId": CodeKind.ACCOUNT,
    "SignatureDoesNotMatch": CodeKind.ACCOUNT,
    "MissingAuthenticationToken": CodeKind.ACCOUNT,
    "ExpiredTokenException": CodeKind.ACCOUNT,
}

Signer = Callable[[bytes], bytes]


class SesTransport:
    """Thread-safe: the signer keeps no state between requests."""

    def __init__(
        self,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        http: ProviderHttp,
        *,
        sign: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http, self._sign, self._clock = http, sign, clock
        self._url = http.base_url + PATH
        self._signer = SigV4Auth(
            Credentials(access_key_id, secret_access_key), SIGNING_NAME, region
        )

    def send(self, email: OutgoingEmail) -> Accepted:
        """Send ``email`` once; its SES ``MessageId`` is the provider's id. Raises
        ``schemas.failures`` errors only (``providers.answers``, ``providers.exchange``)."""
        if not (email.sender + email.recipient).isascii():
            raise PermanentFailure(
                Reason.MESSAGE_REJECTED, "non-ASCII address: SES has no SMTPUTF8"
            )
        message = build_message(email)  # every header checked first: UNSAFE_CONTENT
        if self._sign is not None:
            message = self._sign(message)
        body = json.dumps(
            {
                "FromEmailAddress": email.sender,
                "Destination": {"ToAddresses": [email.recipient]},
                "Content": {"Raw": {"Data": base64.b64encode(message).decode("ascii")}},
            }
        ).encode("utf-8")
        answer = self._http.post(PATH, content=body, headers=self._signed_headers(body))
        if 200 <= answer.status <= 299:
            document = answer.json()
            found = provider_id(document.get("MessageId") if isinstance(document, dict) else None)
            return Accepted(accepted_reply(answer.status, NAME, found), found)
        raise failure(self._refusal(answer))

    def close(self) -> None:
        self._http.close()

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        """``Content-Type``, ``X-Amz-Date`` and ``Authorization`` for this body, signed now."""
        request = AWSRequest(
            method="POST", url=self._url, data=body, headers={"Content-Type": "application/json"}
        )
        self._signer.add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}

    def _refusal(self, answer: Answer) -> Refusal:
        code = error_type(answer)
        wait = retry_after(answer.headers.get("Retry-After"), self._clock())
        return Refusal(NAME, answer.status, code, KINDS.get(code or ""), wait)


def error_type(answer: Answer) -> str | None:
    """The error's type: the ``x-amzn-ErrorType`` header (before any ``:``), else the body's
    ``code``, ``Code`` or ``__type`` (after any ``#``), as botocore reads a rest-json error."""
    header = answer.headers.get("x-amzn-ErrorType")
    if header:
        return header.split(":", 1)[0].strip() or None
    document = answer.json()
    if not isinstance(document, dict):
        return None
    for key in ("code", "Code", "__type"):
        value = document.get(key)
        if isinstance(value, str) and value:
            return value.split(":", 1)[0].rsplit("#", 1)[-1]
    return None
