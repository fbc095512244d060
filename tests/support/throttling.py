"""An SMTP relay that counts like a provider with a sending quota: it records when it accepts
each message and, with a ``limit``, answers ``421 4.7.0 rate limited`` at the end of DATA to
any message that would make more than ``limit`` accepted in the last second (a sliding window,
every connection together). Without a limit it only records, so a test can measure the most
messages any one-second window held."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator

import pytest

from tests.support.smtp import SmtpTestServer

THROTTLE_REPLY = "421 4.7.0 rate limited"


class ThrottlingSmtpServer(SmtpTestServer):
    """``limit`` (messages per sliding second) may be changed while running."""

    def __init__(self, limit: float | None = None) -> None:
        super().__init__()
        self.limit = limit
        self._guard = threading.Lock()
        self._window: deque[float] = deque()
        self._accepted: list[float] = []
        self._refused: list[float] = []

    def refusal(self) -> str | None:
        now = time.monotonic()
        with self._guard:
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if self.limit is not None and len(self._window) >= self.limit:
                self._refused.append(now)
                return THROTTLE_REPLY
            self._window.append(now)
            self._accepted.append(now)
            return None

    @property
    def accepted_at(self) -> list[float]:
        """When each message was accepted (monotonic seconds), in order."""
        with self._guard:
            return list(self._accepted)

    @property
    def refused_at(self) -> list[float]:
        with self._guard:
            return list(self._refused)

    def busiest_second(self) -> int:
        """The most messages accepted within any one second (a window closed at both ends)."""
        times = self.accepted_at
        best, low = 0, 0
        for high, at in enumerate(times):
            while times[low] < at - 1.0:
                low += 1
            best = max(best, high - low + 1)
        return best


@pytest.fixture(name="throttling_smtp")
def throttling_smtp_fixture() -> Iterator[ThrottlingSmtpServer]:
    server = ThrottlingSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
