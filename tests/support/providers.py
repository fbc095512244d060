"""Fakes of the four HTTP API providers, real HTTP servers of the tests' own, built from the
providers' published documentation (the URLs are in ``email_worker/providers/*.py``).

Each checks what its real API checks before it takes a message: the method and path, the
authentication (SES: the SigV4 signature is *recomputed* with botocore from the received
request and the test's secret key, so a wrong key or a tampered body fails; SendGrid: the
bearer key; Mailgun: basic auth ``api:KEY``; Postmark: the server token header), the content
type and the body's shape (required fields and their types). Anything else is refused with the
provider's documented error shape and recorded in ``refused``. A valid request is recorded in
``taken`` and answered as documented, or with the next scripted ``Reply`` (``script``).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.http import FakeHttpServer, Reply, Seen

Problem = tuple[int, str]  # (status, what is wrong): refused with the provider's error shape


@dataclass(frozen=True)
class Taken:
    """A message a fake accepted: the recipient, our Message-ID, the raw MIME (SES, Mailgun)
    or the JSON body (SendGrid, Postmark)."""

    recipient: str
    message_id: str | None
    raw: bytes | None = None
    body: Any = None


def _headers(seen: Seen) -> dict[str, str]:
    return {name.lower(): value for name, value in seen.headers.items()}


def _mime(raw: bytes) -> Any:
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)


def _form(boundary: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A ``multipart/form-data`` body (RFC 7578) by field name: (file name or None, value)."""
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + boundary.strip('"').encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = _mime(head + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), value.removesuffix(b"\r\n"))
    return fields


class ProviderFake:
    """One provider's send endpoint. Subclasses check a request (``check``: a ``Problem``
    or the ``Taken`` message), say how they refuse (``error``) and accept (``accept``)."""

    path = ""

    def __init__(self) -> None:
        self.server = FakeHttpServer().start()
        self.taken: list[Taken] = []
        self.refused: list[Problem] = []
        self.ids: list[str] = []  # the provider's ids it answered, in order
        self._script: list[Reply] = []
        self.server.route("POST", self.path, self._answer)

    @property
    def url(self) -> str:
        return self.server.url

    def script(self, *replies: Reply) -> None:
        """The next valid requests get these answers (in order) instead of an acceptance;
        the provider still took each one (a slow answer is a taken message)."""
        self._script.extend(replies)

    def stop(self) -> None:
        self.server.stop()

    def _answer(self, seen: Seen) -> Reply:
        found = self.check(seen)
        if isinstance(found, tuple):
            self.refused.append(found)
            return self.error(*found)
        if self._script:
            reply = self._script.pop(0)
            if reply.status < 300:
                self.taken.append(found)
            return reply
        self.taken.append(found)
        return self.accept(found)

    def check(self, seen: Seen) -> Taken | Problem:
        raise NotImplementedError

    @staticmethod
    def error(status: int, what: str) -> Reply:
        raise NotImplementedError

    def accept(self, taken: Taken) -> Reply:
        raise NotImplementedError


class SesFake(ProviderFake):
    """SES v2 ``SendEmail`` (rest-json; errors name their type in ``x-amzn-ErrorType``)."""

    path = "/v2/email/outbound-emails"

    def __init__(self, region: str, access_key_id: str, secret_access_key: str) -> None:
        self.region, self.key_id, self._secret = region, access_key_id, secret_access_key
        super().__init__()

    @staticmethod
    def error(status: int, what: str) -> Reply:
        kind = what.split(":", 1)[0]
        header = f"{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/"
        return Reply(status, {"message": what}, {"x-amzn-ErrorType": header})

    def accept(self, taken: Taken) -> Reply:
        self.ids.append(f"0100{secrets.token_hex(20)}-000000")
        return Reply(200, {"MessageId": self.ids[-1]})

    def check(self, seen: Seen) -> Taken | Problem:
        problem = self.verify_signature(seen)
        if problem is not None:
            return problem
        try:
            document = json.loads(seen.body)
            data = base64.b64decode(document["Content"]["Raw"]["Data"], validate=True)
            to = document["Destination"]["ToAddresses"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return 400, "BadRequestException: Content.Raw.Data and Destination are required"
        if not (isinstance(to, list) and len(to) == 1 and isinstance(to[0], str)):
            return 400, "BadRequestException: ToAddresses must be a list of addresses"
        if b"\r\n\r\n" not in data or any(len(line) > 998 for line in data.split(b"\r\n")):
            return 400, "MessageRejected: a header, a blank line and a body; lines <= 1000"
        return Taken(to[0], _mime(data)["Message-ID"], raw=data)

    def verify_signature(self, seen: Seen) -> Problem | None:
        """None when the request is signed by this fake's key, now, for SES in its region."""
        headers = _headers(seen)
        if headers.get("content-type") != "application/json":
            return 400, "BadRequestException: Content-Type must be application/json"
        parts = headers.get("authorization", "").removeprefix("AWS4-HMAC-SHA256 ").split(", ")
        fields = dict(part.split("=", 1) for part in parts if "=" in part)
        if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
            return 400, "IncompleteSignature: Authorization header is malformed"
        key_id, date, region, service, end = (fields["Credential"].split("/") + [""] * 5)[:5]
        stamp = headers.get("x-amz-date", "")
        if key_id != self.key_id:
            return 403, "InvalidClientTokenId: the security token is invalid"
        if (date, region, service, end) != (stamp[:8], self.region, "ses", "aws4_request"):
            return 403, "InvalidSignatureException: credential scope is wrong"
        signed = fields["SignedHeaders"].split(";")
        if not {"host", "x-amz-date"} <= set(signed) or not self._fresh(stamp):
            return 403, "InvalidSignatureException: Signature expired or headers unsigned"
        request = AWSRequest(
            method=seen.method,
            url=f"http://{headers.get('host', '')}{seen.path}",
            headers={name: headers.get(name, "") for name in signed},
            data=seen.body,
        )
        request.context["timestamp"] = stamp
        signer = SigV4Auth(Credentials(self.key_id, self._secret), "ses", self.region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, fields["Signature"]):
            return 403, "InvalidSignatureException: the signature does not match"
        return None

    @staticmethod
    def _fresh(stamp: str) -> bool:
        try:
            when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return False
        return abs(when.timestamp() - time.time()) <= 300


SENDGRID_RESERVED = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


class SendGridFake(ProviderFake):
    """SendGrid v3 Mail Send (errors ``{"errors": [{"message", "field", "help"}]}``)."""

    path = "/v3/mail/send"

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        super().__init__()

    @staticmethod
    def error(status: int, what: str) -> Reply:
        field, _, message = what.rpartition("|")
        return Reply(status, {"errors": [{"message": message, "field": field or None}]})

    def accept(self, taken: Taken) -> Reply:
        self.ids.append(secrets.token_urlsafe(16))
        return Reply(202, b"", {"X-Message-Id": self.ids[-1]})

    def check(self, seen: Seen) -> Taken | Problem:
        headers = _headers(seen)
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, "authorization required"
        if headers.get("content-type") != "application/json":
            return 400, "Content-Type should be application/json"
        try:
            body = json.loads(seen.body)
            to = body["personalizations"][0]["to"][0]["email"]
            sender, content = body["from"]["email"], body["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return 400, "personalizations|personalizations, from and content are required"
        if not (isinstance(to, str) and isinstance(sender, str)):
            return 400, "personalizations.0.to.0.email|an email must be a string"
        if not isinstance(body.get("subject"), str) or not body["subject"]:
            return 400, "subject|The subject is required"
        types = [part.get("type") for part in content if isinstance(part, dict)]
        if len(types) != len(content) or not all(p.get("value") for p in content):
            return 400, "content|each content needs a type and a value of 1 character or more"
        if "text/plain" in types and types.index("text/plain") != 0:
            return 400, "content|text/plain must be first"
        extra = body.get("headers", {})
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            return 400, "headers|headers must be an object of strings"
        if SENDGRID_RESERVED & {name.lower() for name in extra}:
            return 400, "headers|a reserved header may not be set"
        return Taken(to, extra.get("Message-ID"), body=body)


class MailgunFake(ProviderFake):
    """Mailgun ``messages.mime`` (multipart ``to`` and ``message`` as a file)."""

    def __init__(self, domain: str, api_key: str) -> None:
        self.domain, self.api_key = domain, api_key
        self.path = f"/v3/{domain}/messages.mime"
        super().__init__()

    @staticmethod
    def error(status: int, what: str) -> Reply:
        return Reply(status, "Forbidden" if status == 401 else {"message": what})

    def accept(self, taken: Taken) -> Reply:
        self.ids.append(f"<{uuid.uuid4().hex}@{self.domain}>")
        return Reply(200, {"id": self.ids[-1], "message": "Queued. Thank you."})

    def check(self, seen: Seen) -> Taken | Problem:
        headers = _headers(seen)
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if headers.get("authorization") != f"Basic {expected}":
            return 401, "Forbidden"
        kind = headers.get("content-type", "")
        if not kind.startswith("multipart/form-data; boundary="):
            return 400, "the body must be multipart/form-data"
        fields = _form(kind.removeprefix("multipart/form-data; boundary="), seen.body)
        if "to" not in fields or "message" not in fields:
            return 400, "'to' and 'message' parameters are required"
        if fields["message"][0] is None:
            return 400, "'message' must be sent as a file upload"
        raw = fields["message"][1]
        return Taken(fields["to"][1].decode(), _mime(raw)["Message-ID"], raw=raw)


class PostmarkFake(ProviderFake):
    """Postmark ``/email`` (errors ``{"ErrorCode", "Message"}``, mostly 422)."""

    path = "/email"

    def __init__(self, server_token: str) -> None:
        self.server_token = server_token
        super().__init__()

    @staticmethod
    def error(status: int, what: str) -> Reply:
        code, _, message = what.partition(" ")
        return Reply(status, {"ErrorCode": int(code), "Message": message})

    def accept(self, taken: Taken) -> Reply:
        self.ids.append(str(uuid.uuid4()))
        answer = {"To": taken.recipient, "SubmittedAt": datetime.now(UTC).isoformat()}
        return Reply(200, answer | {"MessageID": self.ids[-1], "ErrorCode": 0, "Message": "OK"})

    def check(self, seen: Seen) -> Taken | Problem:
        headers = _headers(seen)
        if headers.get("x-postmark-server-token") != self.server_token:
            return 401, "10 Bad or missing Server API token"
        if headers.get("accept") != "application/json":
            return 422, "300 Accept: application/json is required"
        if headers.get("content-type") != "application/json":
            return 422, "409 JSON required"
        try:
            body = json.loads(seen.body)
        except ValueError:
            return 422, "402 Invalid JSON"
        strings = ("From", "To", "Subject", "HtmlBody", "TextBody", "ReplyTo", "MessageStream")
        if not isinstance(body.get("From"), str) or not isinstance(body.get("To"), str):
            return 422, "300 Invalid email request: From and To are required"
        if any(not isinstance(body[key], str) for key in strings if key in body):
            return 422, "403 Incompatible JSON"
        if not (body.get("HtmlBody") or body.get("TextBody")):
            return 422, "300 Provide either email TextBody or HtmlBody or both"
        pairs = body.get("Headers", [])
        if not all(isinstance(p, dict) and set(p) == {"Name", "Value"} for p in pairs):
            return 422, "403 Headers must be a list of Name and Value"
        found = {p["Name"]: p["Value"] for p in pairs}
        return Taken(body["To"], found.get("Message-ID"), body=body)
