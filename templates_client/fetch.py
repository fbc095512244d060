"""One GET to a service the worker depends on (the template service, the user service) and the
classification of its answer into our own errors (CONTRACT sections 5 and 6, RELIABILITY rules
15 and 17). Every failure of the network layer is mapped exactly once, here:

    2xx, strict JSON within the size cap      the decoded answer
    2xx otherwise (not JSON, too deep, a      PermanentFailure(invalid)       no breaker trip
      lone surrogate, too large)
    404                                       PermanentFailure(not_found)     no breaker trip
    401, 403                                  SystemicFailure(unauthorized)   pause consuming
    other 4xx but 408, 425, 429               PermanentFailure(rejected)      no breaker trip
    5xx, 3xx, 408, 425, 429, timeout,         TransientFailure(unavailable)   counts against
      refused or broken connection                                            the breaker

Details name the cause only: never the URL (it may carry ids) nor any content of the answer.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from schemas.failures import PermanentFailure, Reason, SystemicFailure, TransientFailure
from schemas.strict_json import loads_strict

TRANSIENT_4XX = frozenset({408, 425, 429})
UNAUTHORIZED = frozenset({401, 403})


@dataclass(frozen=True)
class ServiceReasons:
    """The reason codes one service's answers are classified with, and its name for details."""

    service: str
    unavailable: Reason
    not_found: Reason
    unauthorized: Reason
    rejected: Reason
    invalid: Reason


def check_path(path: str, placeholders: Collection[str], required: str) -> str:
    """``path`` when it is a usable path template (``TEMPLATE_PATH``, ``USER_SERVICE_PATH``):
    it starts with ``/``, uses only ``placeholders`` (``{name}``, no format spec) and uses
    ``required``. Raises ``ValueError`` saying what is wrong."""
    if not path.startswith("/"):
        raise ValueError(f"must start with '/', like /api/v1/templates/{{{required}}}")
    if "#" in path or any(ch.isspace() for ch in path):
        raise ValueError("must not hold '#' or whitespace")
    try:
        fields = [parsed[1:] for parsed in string.Formatter().parse(path) if parsed[1] is not None]
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"{exc} (write a literal brace as {{{{ or }}}})") from None
    for name, spec, conversion in fields:
        if name not in placeholders or spec or conversion:
            known = ", ".join(f"{{{known}}}" for known in placeholders)
            raise ValueError(f"unknown placeholder {{{name}}}; known: {known}")
    if required not in {name for name, _, _ in fields}:
        raise ValueError(f"must use the placeholder {{{required}}}")
    return path


def fill_path(path: str, **values: str) -> str:
    """``path`` with each placeholder replaced by its value, percent-encoded (``/`` too)."""
    return path.format(**{name: quote(value, safe="") for name, value in values.items()})


class ResponseTooLarge(ValueError):
    """The answer is larger than the caller's cap; it was not read to the end."""


def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, reading at most ``max_bytes`` of it (a streamed response is read chunk by
    chunk and abandoned once over the cap). Raises ``ResponseTooLarge``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"declared {declared} bytes, cap {max_bytes}")
    try:
        body = response.content  # already read: a non-streaming request
    except httpx.ResponseNotRead:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"over {max_bytes} bytes") from None
            chunks.append(chunk)
        body = b"".join(chunks)
    if len(body) > max_bytes:
        raise ResponseTooLarge(f"over {max_bytes} bytes")
    return body


def decode_answer(body: bytes, invalid: Reason) -> object:
    """The answer as JSON, decoded strictly (``schemas.strict_json``: UTF-8, no duplicate keys,
    finite numbers, nesting at most 32 deep, no lone surrogates or NUL). Raises
    ``PermanentFailure(invalid)`` otherwise, never ``RecursionError`` or ``UnicodeError``."""
    try:
        return loads_strict(body)
    except PermanentFailure as exc:
        raise PermanentFailure(invalid, f"answer is not usable JSON: {exc.detail}") from None


def fetch_answer(
    http: httpx.Client,
    url: str,
    reasons: ServiceReasons,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> object:
    """GET ``url`` and return the decoded JSON of a 2xx answer; raises as the table above."""
    try:
        with http.stream("GET", url, headers=headers) as response:
            _check_status(response.status_code, reasons)
            body = read_capped(response, max_bytes)
    except httpx.TimeoutException as exc:
        raise TransientFailure(reasons.unavailable, f"timeout ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        detail = f"connection failed ({type(exc).__name__})"
        raise TransientFailure(reasons.unavailable, detail) from exc
    except ResponseTooLarge as exc:
        raise PermanentFailure(reasons.invalid, f"answer too large: {exc}") from None
    return decode_answer(body, reasons.invalid)


def _check_status(status: int, reasons: ServiceReasons) -> None:
    if 200 <= status < 300:
        return
    if status == 404:
        raise PermanentFailure(reasons.not_found, f"404 from the {reasons.service}")
    if status in UNAUTHORIZED:
        raise SystemicFailure(
            reasons.unauthorized, f"HTTP {status}: the {reasons.service} refuses our credentials"
        )
    if 400 <= status < 500 and status not in TRANSIENT_4XX:
        raise PermanentFailure(reasons.rejected, f"HTTP {status} from the {reasons.service}")
    if 300 <= status < 400:
        detail = f"HTTP {status}: redirects are not followed (check the service URL)"
        raise TransientFailure(reasons.unavailable, detail)
    raise TransientFailure(reasons.unavailable, f"HTTP {status}")
