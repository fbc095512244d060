"""Recipient resolution (CONTRACT sections 3 and 6): the address in the message wins; otherwise
the optional user service turns ``user_id`` into an address, a name and the email preference.

The user service is asked with ``GET {user_service_url}/api/v1/users/{user_id}`` (the id
path-escaped) and the header ``Authorization: Bearer <EMAIL_WORKER_USER_SERVICE_TOKEN>`` when a
token is configured. Its answer (gateway envelope or bare object) carries ``email``, ``name`` and
``preferences.email``; it sits behind its own circuit breaker. No address, name or user id ever
appears in a failure detail or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from email_worker.ports import Recipient
from schemas.addresses import validate_address
from schemas.failures import DeferredFailure, PermanentFailure, Reason
from schemas.request import EmailRequest
from templates_client.breaker import Breaker, BreakerOpen
from templates_client.transport import get_object

UNAVAILABLE = Reason.USER_SERVICE_UNAVAILABLE
# Spellings of "off" seen in preference flags; anything else (missing included) means on.
OFF_VALUES = frozenset({"false", "no", "off", "0", "disabled"})


@dataclass(frozen=True)
class UserRecord:
    """What the user service said. ``email`` is unvalidated: ``validate_address`` judges it."""

    email: object
    name: str | None
    email_enabled: bool


class UserServiceClient:
    """Fetches user records; thread-safe (share one ``httpx.Client``)."""

    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        token: str | None,
        *,
        fail_max: int = 5,
        reset_seconds: float = 30,
        max_bytes: int = 65_536,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._max_bytes = max_bytes
        self._breaker = Breaker("user-service", fail_max=fail_max, reset_seconds=reset_seconds)

    @property
    def breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, for readiness and metrics."""
        return self._breaker.state

    def fetch(self, user_id: str) -> UserRecord:
        """The user's record. Raises ``PermanentFailure(RECIPIENT_UNKNOWN)`` on 404,
        ``TransientFailure(USER_SERVICE_UNAVAILABLE)`` on 5xx, timeouts, refused connections or
        a malformed answer, and ``DeferredFailure(USER_SERVICE_UNAVAILABLE)`` while the breaker
        is open (no request is made then)."""
        url = f"{self._base}/api/v1/users/{quote(user_id, safe='')}"
        try:
            body = self._breaker.call(
                lambda: get_object(
                    self._http,
                    url,
                    reason=UNAVAILABLE,
                    not_found=Reason.RECIPIENT_UNKNOWN,
                    max_bytes=self._max_bytes,
                    headers=self._headers,
                )
            )
        except BreakerOpen as exc:
            raise DeferredFailure(UNAVAILABLE, "breaker open") from exc
        return _record(body)


def _record(body: dict[str, Any]) -> UserRecord:
    name = body.get("name")
    preferences = body.get("preferences")
    flag = preferences.get("email") if isinstance(preferences, dict) else None
    return UserRecord(
        email=body.get("email"),
        name=name if isinstance(name, str) and name.strip() else None,
        email_enabled=not _is_off(flag),
    )


def _is_off(flag: object) -> bool:
    """An explicit opt-out only: ``false``, ``0`` or an "off" string. Missing means allowed."""
    if isinstance(flag, bool):
        return not flag
    if isinstance(flag, int):
        return flag == 0
    return isinstance(flag, str) and flag.strip().lower() in OFF_VALUES


class RecipientDirectory:
    """``RecipientResolver``: the message's own address, else the user service's."""

    def __init__(self, users: UserServiceClient | None) -> None:
        self._users = users

    def resolve(self, request: EmailRequest) -> Recipient:
        """The validated recipient. An address in the message is used as is (already
        validated) and the user service is not asked. Raises ``PermanentFailure`` with
        ``OPTED_OUT`` (``preferences.email`` is false), ``RECIPIENT_MISSING`` (no address
        anywhere, or no user service to ask), ``RECIPIENT_INVALID`` or ``RECIPIENT_UNKNOWN``;
        the user service's transient and deferred failures pass through."""
        if request.recipient:
            return Recipient(address=request.recipient)
        if not request.user_id:
            raise PermanentFailure(Reason.RECIPIENT_MISSING, "no address and no user_id")
        if self._users is None:
            raise PermanentFailure(Reason.RECIPIENT_MISSING, "no address and no user service")
        user = self._users.fetch(request.user_id)
        if not user.email_enabled:
            raise PermanentFailure(Reason.OPTED_OUT, "user turned email off")
        if user.email is None or (isinstance(user.email, str) and not user.email.strip()):
            raise PermanentFailure(Reason.RECIPIENT_MISSING, "user record has no email")
        return Recipient(address=validate_address(user.email), name=user.name)
