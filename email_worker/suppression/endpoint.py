"""``/unsubscribe/{token}`` on the HTTP port: RFC 8058 one-click unsubscribe.

- ``POST`` with the body ``List-Unsubscribe=One-Click`` (``application/x-www-form-urlencoded``
  or ``multipart/form-data``, as RFC 8058 section 3.2 allows) adds the token's address to the
  suppression list with reason ``unsubscribe`` (source ``unsubscribe``) and answers 200. Doing
  it twice changes nothing more. No credentials: the token is the authority.
- ``GET`` never unsubscribes: mail scanners and link previewers fetch URLs on their own
  (RFC 8058 section 4). It answers a minimal page whose one button sends that same POST, for
  people whose client opened the link in a browser.
- A token this deployment did not mint (forged, altered, truncated) answers 404 to both, before
  anything else is looked at; a valid token with another POST body answers 400; a database that
  cannot be reached answers 503 with ``Retry-After`` (mailbox providers retry).

Nothing here logs, stores or shows the address beyond the list itself; pages carry
``Referrer-Policy: no-referrer`` (the token is in the URL) and a CSP that allows only the form.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qs, unquote

from schemas.failures import WorkerFailure

log = logging.getLogger(__name__)

PREFIX = "/unsubscribe/"
# A one-click body is ``List-Unsubscribe=One-Click`` (26 bytes; a multipart form of it, well
# under 1 KiB). Anything past this is not one, and is not parsed: the MIME parser spends seconds
# of CPU (holding the GIL) on a 1 MiB form of tiny parts, from anyone who has a token.
MAX_ONE_CLICK_BODY = 8192
Answer = tuple[int, bytes, str, dict[str, str]]
_HTML = "text/html; charset=utf-8"
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width"><title>{title}</title></head>'
    "<body><h1>{title}</h1>{body}</body></html>"
)
_CONFIRM = _PAGE.format(
    title="Unsubscribe",
    body='<p>Stop receiving these emails?</p><form method="post" action="">'
    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>',
).encode()
_DONE = _PAGE.format(title="Unsubscribed", body="<p>You will not receive these emails.</p>")
_GONE = _PAGE.format(title="Not found", body="<p>This link is not valid.</p>")


class TokenReader(Protocol):
    def read(self, token: str) -> str | None: ...


class SuppressionWriter(Protocol):
    def add(
        self,
        address: str,
        reason: str,
        source: str,
        detail: str = "",
        expires_at: datetime | None = None,
    ) -> None: ...


def _answer(code: int, page: str | bytes, **extra: str) -> Answer:
    body = page if isinstance(page, bytes) else page.encode()
    return code, body, _HTML, _HEADERS | extra


def is_one_click(headers: Mapping[str, str], body: bytes) -> bool:
    """Whether ``body`` holds ``List-Unsubscribe=One-Click`` (RFC 8058 section 3.2), as a form
    (urlencoded or multipart); ``headers`` are lower-cased names."""
    if len(body) > MAX_ONE_CLICK_BODY:
        return False
    content_type = headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        return _multipart_one_click(headers["content-type"], body)
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return "One-Click" in fields.get("List-Unsubscribe", [])


def _multipart_one_click(content_type: str, body: bytes) -> bool:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if name == "List-Unsubscribe" and isinstance(payload, bytes):
            return payload.strip() == b"One-Click"
    return False


class UnsubscribeEndpoint:
    """The ``HttpRoute`` for ``PREFIX``."""

    def __init__(self, tokens: TokenReader, store: SuppressionWriter) -> None:
        self._tokens = tokens
        self._store = store

    def __call__(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        token = unquote(path.split("?", 1)[0].removeprefix(PREFIX))
        try:
            address = self._tokens.read(token)
        except WorkerFailure as exc:  # the key could not be loaded yet (database down)
            log.warning("could not read an unsubscribe token", extra={"error": exc.reason})
            return _answer(503, b"", **{"Retry-After": "60"})
        if address is None:
            return _answer(404, _GONE)
        if method == "GET":
            return _answer(200, _CONFIRM)
        if method != "POST":  # pragma: no cover - the server routes GET and POST only
            return _answer(405, b"", Allow="GET, POST")
        if not is_one_click(headers, body):
            return 400, b"the body must be List-Unsubscribe=One-Click\n", "text/plain", {}
        try:
            self._store.add(address, "unsubscribe", "unsubscribe")
        except (WorkerFailure, ValueError) as exc:
            log.warning("could not record an unsubscribe", extra={"error": type(exc).__name__})
            return _answer(503, b"", **{"Retry-After": "60"})
        log.info("unsubscribed", extra={"domain": address.rpartition("@")[2].lower()})
        return _answer(200, _DONE)
