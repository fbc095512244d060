"""Recipient resolution (CONTRACT sections 3 and 6): the address in the message wins; otherwise
the optional user service turns ``user_id`` into an address, a name and the email preference.

The user service is asked with ``GET {user_service_url}{USER_SERVICE_PATH}`` (default
``/api/v1/users/{user_id}``, the id percent-encoded) with the token in ``USER_SERVICE_AUTH_HEADER``
(``Authorization: Bearer <token>`` by default; any other header gets the bare token). Its answer
(gateway envelope or bare object) carries ``email``, ``name`` and ``preferences.email``, or
wherever ``USER_FIELDS`` says (``templates_client.fields``). It sits behind its own breaker:

    404, another 4xx but 408/425/429, a 2xx    PermanentFailure(recipient_unknown)
      that is no record or has no address
    401, 403                                   SystemicFailure(user_service_unauthorized)
    5xx, 408, 425, 429, timeouts, refused      TransientFailure(user_service_unavailable)

No address, name or user id ever appears in a failure detail or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from email_worker.ports import Recipient
from schemas.addresses import validate_address
from schemas.failures import DeferredFailure, PermanentFailure, Reason
from schemas.request import EmailRequest
from templates_client.breaker import Breaker, BreakerOpen
from templates_client.fetch import ServiceReasons, check_path, fetch_answer, fill_path
from templates_client.fields import FieldReader, Path
from templates_client.transport import HttpClient

UNAVAILABLE = Reason.USER_SERVICE_UNAVAILABLE
UNKNOWN = Reason.RECIPIENT_UNKNOWN
DEFAULT_PATH = "/api/v1/users/{user_id}"
DEFAULT_PATHS: dict[str, tuple[Path, ...]] = {
    "email": (("email",),),
    "name": (("name",),),
    "email_enabled": (("preferences", "email"),),
}
USER_FIELD_NAMES = tuple(DEFAULT_PATHS)
REASONS = ServiceReasons(
    service="user service",
    unavailable=UNAVAILABLE,
    not_found=UNKNOWN,
    unauthorized=Reason.USER_SERVICE_UNAUTHORIZED,
    rejected=UNKNOWN,
    invalid=UNKNOWN,
)
# Spellings of "off" seen in preference flags; anything else (missing included) means on.
OFF_VALUES = frozenset({"false", "no", "off", "0", "disabled"})


def check_user_path(path: str) -> str:
    """``USER_SERVICE_PATH`` when usable; raises ``ValueError`` saying what is wrong."""
    return check_path(path, ("user_id",), "user_id")


def auth_headers(header: str, token: str | None) -> dict[str, str]:
    """The token as ``header`` sends it: ``Bearer <token>`` in ``Authorization``, else bare."""
    if not token:
        return {}
    return {header: f"Bearer {token}" if header.lower() == "authorization" else token}


@dataclass(frozen=True)
class UserRecord:
    """What the user service said. ``email`` is unvalidated: ``validate_address`` judges it."""

    email: object
    name: str | None
    email_enabled: bool


class UserServiceClient:
    """Fetches user records; thread-safe (share one HTTP client)."""

    def __init__(
        self,
        base_url: str,
        http: HttpClient,
        token: str | None,
        *,
        path: str = DEFAULT_PATH,
        auth_header: str = "Authorization",
        fields: Mapping[str, Path] | None = None,
        fail_max: int = 5,
        reset_seconds: float = 30,
        max_bytes: int = 65_536,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._path = check_user_path(path)
        self._http = http
        self._headers = auth_headers(auth_header, token)
        self._reader = FieldReader(DEFAULT_PATHS, fields or {})
        self._max_bytes = max_bytes
        self._breaker = Breaker("user-service", fail_max=fail_max, reset_seconds=reset_seconds)

    @property
    def breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, for readiness and metrics."""
        return self._breaker.state

    @property
    def email_places(self) -> str:
        """Where the address is read from (``email``, or the ``USER_FIELDS`` path)."""
        return self._reader.places("email")

    def fetch(self, user_id: str) -> UserRecord:
        """The user's record; raises as the table in the module docstring, and
        ``DeferredFailure(USER_SERVICE_UNAVAILABLE)`` while the breaker is open (no request is
        made then)."""
        url = self._base + fill_path(self._path, user_id=user_id)
        try:
            answer = self._breaker.call(
                lambda: fetch_answer(
                    self._http, url, REASONS, max_bytes=self._max_bytes, headers=self._headers
                )
            )
        except BreakerOpen as exc:
            raise DeferredFailure(UNAVAILABLE, "breaker open") from exc
        return user_from_answer(answer, self._reader)


def user_from_answer(answer: object, reader: FieldReader) -> UserRecord:
    """The ``UserRecord`` in a decoded answer. Raises ``PermanentFailure(RECIPIENT_UNKNOWN)``
    when the answer is not an object (or an envelope reporting failure)."""
    try:
        emails, names, flags = (reader.candidates(answer, name) for name in USER_FIELD_NAMES)
    except ValueError as exc:
        raise PermanentFailure(UNKNOWN, f"user service answer is no record: {exc}") from None
    name = next((n for n in names if isinstance(n, str) and n.strip()), None)
    return UserRecord(
        email=emails[0] if emails else None,
        name=name,
        email_enabled=not _is_off(flags[0] if flags else None),
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
        in the message and no user id or no user service to ask), ``RECIPIENT_INVALID`` or
        ``RECIPIENT_UNKNOWN`` (unknown to the user service, or its record has no address); the
        user service's transient, deferred and systemic failures pass through."""
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
            detail = f"the user service's answer has no address ({self._users.email_places})"
            raise PermanentFailure(UNKNOWN, detail)
        return Recipient(address=validate_address(user.email), name=user.name)
