"""The SMTP adapter: build the MIME message, send it once, classify what happened.

The envelope sender (MAIL FROM) is ``OutgoingEmail.envelope_sender`` (``RETURN_PATH`` or the From
address). With a ``sign`` function (DKIM, ``email_worker/dkim/``) the built bytes are signed as
they go out: dot-stuffing, which the relay undoes, is the only change after it.

``SmtpMailer`` implements the ``Mailer`` port over ``smtplib`` with a pool of at most
``max_connections`` persistent connections, shared by the calling threads. It drives MAIL, RCPT
and DATA itself, in one write when the relay offers PIPELINING (RFC 2920), and reads their
replies in order, so every failure is known by its phase:

    pool                   none free in time     DeferredFailure(SMTP_UNAVAILABLE), no attempt spent
    connect / TLS / AUTH   refused, timeout      RelayUnavailable(SMTP_UNAVAILABLE), retried briefly
                           bad certificate       SystemicFailure(SMTP_TLS_FAILED)
                           530/534/535           SystemicFailure(SMTP_AUTH_FAILED)
    MAIL, RCPT, DATA       connection lost       RelayUnavailable(SMTP_UNAVAILABLE)
                           4xx                   TransientFailure(SMTP_TRANSIENT)
                           5xx at RCPT           PermanentFailure(RECIPIENT_REJECTED)
                           5xx elsewhere         PermanentFailure(MESSAGE_REJECTED)
    after the final dot    no reply, timeout     AmbiguousDelivery(SMTP_UNKNOWN)

The window after the final dot cannot be closed, only detected (RELIABILITY rule 10): the body
and its terminating dot go out in one ``sendall``; a failure inside it means the relay cannot
have completed the message, a failure after it means it may have. Nothing is ever retried around
DATA. Failure details carry codes and phases, never the relay's text (it echoes addresses).
``RelayUnavailable`` (and ``SystemicFailure``) mean the relay cannot have accepted the message:
the relay router (email_worker/relays/) may hand it to another relay at once.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from email_worker.config import SmtpSecurity
from email_worker.ports import OutgoingEmail
from email_worker.render.mime import build_message, serialize
from email_worker.smtp.pool import PoolCounts, SmtpPool
from email_worker.smtp.wire import accepted_reply, classify, dot_stuffed, mailbox, tls_failure
from schemas.failures import (
    AmbiguousDelivery,
    PermanentFailure,
    Reason,
    RelayUnavailable,
    SystemicFailure,
)

_CONNECT_ATTEMPTS = 3  # quick, jittered: well within a few seconds in total


class _StaleConnection(Exception):
    """A pooled connection turned out dead at MAIL: reconnect once, nothing was sent."""


def _connect_failed(error: BaseException) -> bool:
    return type(error) is RelayUnavailable and error.reason is Reason.SMTP_UNAVAILABLE


def _send_then_reply(smtp: smtplib.SMTP, sender: str, recipient: str) -> tuple[int, bytes]:
    smtp.send(f"MAIL FROM:{sender}\r\nRCPT TO:{recipient}\r\nDATA\r\n")
    return smtp.getreply()


class SmtpMailer:
    """Thread-safe: a send takes an idle pooled connection (or opens one while fewer than
    ``max_connections`` are open) and returns it after a completed transaction; more threads
    than connections wait for one (``smtp_pool``). ``close()`` closes them all."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: SmtpSecurity,
        username: str | None,
        password: str | None,
        timeout: float,
        ca_file: Path | None = None,
        local_hostname: str | None = None,
        max_connections: int = 8,
        connection_wait: float | None = None,
        connect_attempts: int | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._host, self._port, self._security = host, port, security
        self._sign = sign  # DKIM (email_worker/dkim/): the built bytes in, the sent bytes out
        self._username, self._password = username, password
        self._timeout, self._local_hostname = timeout, local_hostname
        # One when other relays can take the message at once (failover beats a quick retry).
        self._connect_attempts = connect_attempts or _CONNECT_ATTEMPTS
        # Always an explicit, verifying context: starttls() without one verifies nothing.
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._pool = SmtpPool(
            self._connect_retrying,
            limit=max_connections,
            wait_seconds=timeout if connection_wait is None else connection_wait,
        )

    def send(self, email: OutgoingEmail) -> str:
        """Send ``email`` once to its one recipient; return the relay's final reply.
        Raises the failures in the module docstring (``schemas.failures`` only)."""
        message = build_message(email)  # checks every header first: UNSAFE_CONTENT
        if self._sign is not None:  # before the pool: no connection is held while signing
            message = self._sign(message)
        with self._pool.slot():
            # The second round only after a stale pooled connection, and on a new one: after a
            # relay restart every idle connection is dead.
            for fresh in (False, True):
                smtp, reused = self._pool.take(fresh=fresh)
                try:
                    reply = self._transaction(smtp, email, message, reused)
                except _StaleConnection:
                    self._pool.discard(smtp)
                    continue
                except BaseException:
                    self._pool.discard(smtp)  # never reuse a connection in an unknown state
                    raise
                self._pool.give_back(smtp)
                return reply
        raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connection lost at MAIL")

    def close(self) -> None:
        """QUIT and close every pooled connection."""
        self._pool.close()

    def pool_counts(self) -> PoolCounts:
        """Busy, idle and waiting, for the metrics."""
        return self._pool.counts()

    # Connections.
    def _connect_retrying(self) -> smtplib.SMTP:
        retrying = Retrying(
            stop=stop_after_attempt(self._connect_attempts),
            wait=wait_random_exponential(multiplier=0.2, max=1.0),
            retry=retry_if_exception(_connect_failed),
            reraise=True,
        )
        return retrying(self._connect)

    def _connect(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._open_socket()
            self._handshake(smtp)
            return smtp
        except BaseException:
            if smtp is not None:
                smtp.close()
            raise

    def _open_socket(self) -> smtplib.SMTP:
        host, port, name, timeout = self._host, self._port, self._local_hostname, self._timeout
        try:
            if self._security is SmtpSecurity.TLS:
                return smtplib.SMTP_SSL(
                    host, port, local_hostname=name, timeout=timeout, context=self._tls
                )
            return smtplib.SMTP(host, port, local_hostname=name, timeout=timeout)
        except ssl.SSLError as exc:
            raise tls_failure(exc) from None
        except smtplib.SMTPConnectError as exc:
            raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, f"{exc.smtp_code} at connect") from None
        except OSError as exc:
            raise RelayUnavailable(
                Reason.SMTP_UNAVAILABLE, f"connect failed: {type(exc).__name__}"
            ) from None

    def _handshake(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.ehlo_or_helo_if_needed()
            if self._security is SmtpSecurity.STARTTLS:
                self._starttls(smtp)
            if self._username is not None:
                smtp.login(self._username, self._password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise SystemicFailure(Reason.SMTP_AUTH_FAILED, f"{exc.smtp_code} at AUTH") from None
        except smtplib.SMTPNotSupportedError:
            raise SystemicFailure(Reason.SMTP_AUTH_FAILED, "AUTH not offered") from None
        except smtplib.SMTPResponseException as exc:  # EHLO/HELO refused
            raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, f"{exc.smtp_code} at EHLO") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayUnavailable(
                Reason.SMTP_UNAVAILABLE, f"handshake failed: {type(exc).__name__}"
            ) from None

    def _starttls(self, smtp: smtplib.SMTP) -> None:
        if not smtp.has_extn("starttls"):
            raise SystemicFailure(Reason.SMTP_TLS_FAILED, "STARTTLS required but not offered")
        try:
            smtp.starttls(context=self._tls)
        except ssl.SSLError as exc:
            raise tls_failure(exc) from None
        except smtplib.SMTPResponseException as exc:
            raise SystemicFailure(Reason.SMTP_TLS_FAILED, f"{exc.smtp_code} at STARTTLS") from None
        smtp.ehlo()

    # The transaction.
    def _transaction(
        self, smtp: smtplib.SMTP, email: OutgoingEmail, message: bytes | EmailMessage, reused: bool
    ) -> str:
        utf8 = not (email.sender + email.recipient).isascii()
        if utf8 and not smtp.has_extn("smtputf8"):
            raise PermanentFailure(Reason.MESSAGE_REJECTED, "non-ASCII address, no SMTPUTF8")
        payload = dot_stuffed(serialize(message, utf8=utf8))
        if utf8:
            self._stepwise_utf8(smtp, email, reused)
        elif smtp.has_extn("pipelining"):
            self._pipelined(smtp, email, reused)
        else:
            self._stepwise(smtp, email, reused)
        try:
            smtp.send(payload)
        except OSError:  # the final dot did not leave: the relay cannot have the message
            raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connection lost in DATA") from None
        try:
            code, reply = smtp.getreply()
        except OSError:  # after the final dot: the relay may have the message
            raise AmbiguousDelivery(Reason.SMTP_UNKNOWN, "no reply after end of DATA") from None
        classify(code, reply, "end of DATA")
        return accepted_reply(code, reply)

    def _pipelined(self, smtp: smtplib.SMTP, email: OutgoingEmail, reused: bool) -> None:
        """MAIL, RCPT and DATA in one write, then their three replies in order (RFC 2920).

        A failure is raised for the first phase that failed; the replies after it are left
        unread, which is safe only because a failed transaction's connection is discarded."""
        sender, recipient = mailbox(email.envelope_sender), mailbox(email.recipient)
        self._mail(smtp, reused, lambda: _send_then_reply(smtp, sender, recipient))
        self._command(smtp, "RCPT", smtp.getreply)
        self._command(smtp, "DATA", smtp.getreply, expect=354)

    def _stepwise(self, smtp: smtplib.SMTP, email: OutgoingEmail, reused: bool) -> None:
        sender, recipient = mailbox(email.envelope_sender), mailbox(email.recipient)
        self._mail(smtp, reused, lambda: smtp.docmd("MAIL", f"FROM:{sender}"))
        self._command(smtp, "RCPT", lambda: smtp.docmd("RCPT", f"TO:{recipient}"))
        self._command(smtp, "DATA", lambda: smtp.docmd("DATA"), expect=354)

    def _stepwise_utf8(self, smtp: smtplib.SMTP, email: OutgoingEmail, reused: bool) -> None:
        # smtplib's own mail() switches the command encoding to UTF-8 for SMTPUTF8.
        self._mail(smtp, reused, lambda: smtp.mail(email.envelope_sender, ["SMTPUTF8"]))
        self._command(smtp, "RCPT", lambda: smtp.rcpt(email.recipient))
        self._command(smtp, "DATA", lambda: smtp.docmd("DATA"), expect=354)

    @staticmethod
    def _mail(smtp: smtplib.SMTP, reused: bool, call: Callable[[], tuple[int, bytes]]) -> None:
        """The MAIL phase, where a pooled connection the relay has dropped shows itself."""
        try:
            code, reply = call()
        except OSError:  # smtplib's disconnects are OSErrors too
            if reused:
                raise _StaleConnection from None
            raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, "connection lost at MAIL") from None
        if reused and code == 421:  # an idle connection the relay has timed out
            raise _StaleConnection
        classify(code, reply, "MAIL")

    @staticmethod
    def _command(
        smtp: smtplib.SMTP,
        phase: str,
        call: Callable[[], tuple[int, bytes]],
        expect: int | None = None,
    ) -> None:
        try:
            code, reply = call()
        except OSError:
            raise RelayUnavailable(Reason.SMTP_UNAVAILABLE, f"connection lost at {phase}") from None
        classify(code, reply, phase, expect)
