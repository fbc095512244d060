"""The sender and DKIM on the wire (CONTRACT sections 11 and 17): what a real SMTP server
receives has the envelope sender, the From and Reply-To headers as configured, and a DKIM
signature that ``dkimpy`` verifies on the bytes as received (after dot-unstuffing)."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from email_worker.config import SmtpSecurity
from email_worker.dkim import DkimSigner
from email_worker.ports import Mailbox, OutgoingEmail, RenderedEmail
from email_worker.smtp.mailer import SmtpMailer
from tests.support.dkim import DOMAIN, SELECTOR, Verifier, new_key, pem
from tests.support.smtp import ReceivedMessage, SmtpTestServer
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

NAME = "Zoë from Acme — Kundenservice der Müller & Söhne GmbH, Düsseldorf"


def _header(message: ReceivedMessage, name: str) -> str:
    """A header's one value as received, unfolded (the legacy parser keeps it raw)."""
    parsed = email.message_from_bytes(message.data, policy=email.policy.compat32)
    values = parsed.get_all(name) or []
    assert len(values) == 1, f"{name}: {len(values)} headers"
    return re.sub(r"\r?\n", "", str(values[0])).strip()


def _display_name(value: str) -> str:
    return str(make_header(decode_header(value.rpartition("<")[0].strip())))


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("pipelining", [True, False])
def test_the_mailer_sends_the_configured_sender_signed(kind: str, pipelining: bool) -> None:
    key = new_key(kind)
    text = "Hello Ann,\n.a line starting with a dot\n..two dots\n" + "filler  line\t\n" * 3000
    content = RenderedEmail(
        subject="Your order ✓ has shipped",
        html="<p>Hello</p>\n.dot-leading html line",
        text=text,
        template_code="shipped",
        template_version="3",
        list_unsubscribe="<https://acme.test/u/t0k3n>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )
    outgoing = OutgoingEmail(
        "noreply@acme.test",
        "ann@example.org",
        "<9a8b@acme.test>",
        content,
        sender_name=NAME,
        reply_to=Mailbox("help@acme.test", "Acme Help"),
        envelope_from="bounces@mail.acme.test",
    )
    with SmtpTestServer(pipelining=pipelining) as server:
        mailer = SmtpMailer(
            server.host,
            server.port,
            security=SmtpSecurity.NONE,
            username=None,
            password=None,
            timeout=5.0,
            sign=DkimSigner(DOMAIN, SELECTOR, key).sign,
        )
        try:
            reply = mailer.send(outgoing)
        finally:
            mailer.close()
        (received,) = server.messages

    assert reply.startswith("250")
    assert received.mail_from == "bounces@mail.acme.test"
    assert received.rcpt_tos == ("ann@example.org",)
    assert _header(received, "From").endswith("<noreply@acme.test>")
    assert _display_name(_header(received, "From")) == NAME
    assert _header(received, "Reply-To") == "Acme Help <help@acme.test>"
    assert b"\r\n.a line starting with a dot\r\n" in received.data  # unstuffed by the relay
    assert Verifier(key).verify(received.data)
    tampered = received.data.replace(b"..two dots", b".two dots", 1)
    assert tampered != received.data and not Verifier(key).verify(tampered)


def test_the_worker_sends_signed_mail_from_the_configured_sender(
    stack: Stack, tmp_path: Path
) -> None:
    key = new_key("rsa")
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem(key))
    stack.start_worker(
        from_address='"Acme Support" <noreply@acme.test>',
        from_name=NAME,
        reply_to="help@acme.test",
        return_path="bounces@mail.acme.test",
        dkim_domain=DOMAIN,
        dkim_selector=SELECTOR,
        dkim_private_key_file=key_file,
    )
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    stack.publish(
        {
            "request_id": request_id,
            "template_code": "welcome",
            "to_email": "grace@example.org",
            "variables": {"name": "Grace", "link": "https://acme.test/start"},
        }
    )

    wait_for(lambda: bool(stack.emails_to("grace@example.org")), 20, "the email")
    (received,) = stack.emails_to("grace@example.org")
    wait_for(lambda: stack.status(request_id) == "sent", 10, "the sent record")

    assert received.mail_from == "bounces@mail.acme.test"
    assert _display_name(_header(received, "From")) == NAME
    assert _header(received, "Reply-To") == "help@acme.test"
    assert _header(received, "Message-ID").endswith("@acme.test>")  # the From address's domain
    verifier = Verifier(key)
    assert verifier.verify(received.data)
    assert verifier.asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]
