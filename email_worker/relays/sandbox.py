"""The sandbox relay (``SANDBOX=true``): sends nothing anywhere, and answers as a relay would.

The message is built exactly as for a real relay (every header checked: unsafe content fails
the same way), then the recipient's local part (lower-cased, a ``+tag`` ignored, so
``bounce+42@example.com`` is ``bounce``) picks what the relay "says":

    local part    outcome                                    what the worker then does
    bounce        550 5.1.1 at RCPT (PermanentFailure)       failed recipient_rejected; the
                                                             address is suppressed (hard bounce)
    softbounce    451 4.3.0 at RCPT once, then accepted      pending (an attempt), then delivered
    complaint     accepted, then a complaint report          delivered, then the report intake
    timeout       no reply after the final dot               unknown (AmbiguousDelivery), retried
    anything else accepted: ``250 2.0.0 sandbox``            delivered

``softbounce`` is remembered per Message-ID, for the last ``memory`` messages of this process
(bounded: a message forgotten, or retried on another replica, gets its 451 once more, then is
accepted). The complaint report is handed to ``complaints(message_id, recipient)`` a moment
after the acceptance (``complaint_delay`` seconds, on one daemon thread), once the ledger has
recorded the request as sent; without a sink, a log line says a report would have come.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from email_worker.ports import OutgoingEmail
from email_worker.relays.urls import SANDBOX_NAME
from email_worker.render.mime import build_message
from schemas.failures import AmbiguousDelivery, PermanentFailure, Reason, TransientFailure

log = logging.getLogger(__name__)

ComplaintSink = Callable[[str, str], None]  # (Message-ID, recipient address)
ACCEPTED = "250 2.0.0 sandbox"
MAX_PENDING_COMPLAINTS = 1000


def simulated(recipient: str) -> str:
    """The outcome the recipient's local part asks for (``bounce``, ``softbounce``,
    ``complaint``, ``timeout``), or ``accept``."""
    local = recipient.rpartition("@")[0].lower().partition("+")[0]
    return local if local in ("bounce", "softbounce", "complaint", "timeout") else "accept"


class SandboxRelay:
    """A ``RelayTransport`` that opens no connection. Thread-safe."""

    name = SANDBOX_NAME

    def __init__(
        self,
        *,
        complaints: ComplaintSink | None = None,
        memory: int = 10_000,
        complaint_delay: float = 2.0,
    ) -> None:
        self._sink = complaints
        self._memory = memory
        self._soft_bounced: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._delay = complaint_delay
        self._complaints: queue.Queue[tuple[float, str, str] | None] = queue.Queue(
            MAX_PENDING_COMPLAINTS
        )
        self._feeder: threading.Thread | None = None

    def send(self, email: OutgoingEmail) -> str:
        """Build the message (the same checks as a real send), then answer as the module says."""
        build_message(email)  # raises PermanentFailure(UNSAFE_CONTENT) as for a real relay
        outcome = simulated(email.recipient)
        if outcome == "bounce":
            raise PermanentFailure(Reason.RECIPIENT_REJECTED, "550 5.1.1 at RCPT")
        if outcome == "timeout":
            raise AmbiguousDelivery(Reason.SMTP_UNKNOWN, "no reply after end of DATA")
        if outcome == "softbounce" and self._first_time(email.message_id):
            raise TransientFailure(Reason.SMTP_TRANSIENT, "451 4.3.0 at RCPT")
        if outcome == "complaint":
            self._complain_later(email.message_id, email.recipient)
        return ACCEPTED

    def close(self) -> None:
        """Stop the complaint feeder (reports not yet due are dropped)."""
        with self._lock:
            feeder, self._feeder = self._feeder, None
        if feeder is not None:
            self._complaints.put(None)
            feeder.join(5)

    def _first_time(self, message_id: str) -> bool:
        with self._lock:
            if message_id in self._soft_bounced:
                del self._soft_bounced[message_id]
                return False
            self._soft_bounced[message_id] = None
            while len(self._soft_bounced) > self._memory:
                self._soft_bounced.popitem(last=False)
            return True

    def _complain_later(self, message_id: str, recipient: str) -> None:
        with self._lock:
            if self._feeder is None:
                self._feeder = threading.Thread(
                    target=self._feed, name="sandbox-complaints", daemon=True
                )
                self._feeder.start()
        try:
            self._complaints.put_nowait((time.monotonic() + self._delay, message_id, recipient))
        except queue.Full:
            log.warning("sandbox: too many complaint reports waiting; this one is dropped")

    def _feed(self) -> None:
        while (item := self._complaints.get()) is not None:
            due, message_id, recipient = item
            time.sleep(max(0.0, due - time.monotonic()))  # reports are due in arrival order
            self._report(message_id, recipient)

    def _report(self, message_id: str, recipient: str) -> None:
        if self._sink is None:
            log.info(
                "sandbox: a complaint report would arrive now (no report intake is wired)",
                extra={"message_id": message_id},
            )
            return
        try:
            self._sink(message_id, recipient)
        except Exception:  # the feeder must outlive a failing intake
            log.exception("sandbox: the complaint report intake failed")
