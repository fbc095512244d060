"""The sender (CONTRACT section 11): the settings that make it, the From and Reply-To headers
they give, and that no template can set an address header."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from email_worker.callbacks.url_policy import host_allowed
from email_worker.config import Settings
from email_worker.pipeline import Pipeline, PipelineConfig
from email_worker.ports import Mailbox, OutgoingEmail, RenderedEmail
from email_worker.render.mime import build_message
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import PermanentFailure, Reason
from schemas.inbound import parse_message
from templates_client.fields import parse_field_paths
from templates_client.template import (
    TEMPLATE_FIELD_NAMES,
    Template,
    template_from_answer,
    template_reader,
)
from tests.fakes import FakeLedger, FakeMailer, FakeNotifier, FakeRecipients, FakeTemplates

RECIPIENT = "ann@example.org"


def _parsed(wire: bytes) -> EmailMessage:
    message = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _raw_header(wire: bytes, name: str) -> str:
    """The header's value as written (folding removed), read with the legacy parser."""
    message = email.message_from_bytes(wire, policy=email.policy.compat32)
    value = message[name]
    assert isinstance(value, str), f"no {name}"
    return value.replace("\r\n", "").replace("\n", "")


def _decoded_name(raw: str) -> str:
    """The display name of ``Name <address>`` decoded as RFC 2047 says (adjacent encoded words
    joined without the whitespace between them)."""
    phrase = raw.rpartition("<")[0].strip()
    return str(make_header(decode_header(phrase))).strip('"')


def _outgoing(**sender: object) -> OutgoingEmail:
    content = RenderedEmail(
        subject="Your code",
        html="<p>123456</p>",
        text="123456",
        template_code="code",
        template_version="1",
    )
    return OutgoingEmail("noreply@acme.com", RECIPIENT, "<1@acme.com>", content, **sender)  # type: ignore[arg-type]


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "address", "name"),
    [
        ({"FROM_ADDRESS": "noreply@acme.com"}, "noreply@acme.com", None),
        ({"FROM_ADDRESS": "Acme Support <noreply@acme.com>"}, "noreply@acme.com", "Acme Support"),
        ({"FROM_ADDRESS": '"Acme, Inc." <noreply@acme.com>'}, "noreply@acme.com", "Acme, Inc."),
        ({"FROM_ADDRESS": '"Zoë Støtte" <noreply@acme.com>'}, "noreply@acme.com", "Zoë Støtte"),
        # Unquoted, as an environment variable holds it: non-ASCII letters and specials too.
        ({"FROM_ADDRESS": "Zoë Støtte <noreply@acme.com>"}, "noreply@acme.com", "Zoë Støtte"),
        (
            {"FROM_ADDRESS": "Équipe Acme, Inc. <noreply@acme.com>"},
            "noreply@acme.com",
            "Équipe Acme, Inc.",
        ),
        ({"FROM_ADDRESS": " <noreply@acme.com> "}, "noreply@acme.com", None),
        (
            {"FROM_ADDRESS": "Acme <noreply@acme.com>", "FROM_NAME": "Zoë from Acme"},
            "noreply@acme.com",
            "Zoë from Acme",
        ),
        ({"FROM_ADDRESS": "noreply@acme.com", "FROM_NAME": "Acme"}, "noreply@acme.com", "Acme"),
        ({"FROM_ADDRESS": "Acme <noreply@acme.com>", "FROM_NAME": ""}, "noreply@acme.com", "Acme"),
    ],
)
def test_from_address_takes_a_display_name_and_from_name_replaces_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], address: str, name: str | None
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"EMAIL_WORKER_{key}", value)

    assert Settings().sender() == Mailbox(address, name)


def test_reply_to_and_return_path_are_read_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().reply_to_mailbox() is None
    assert Settings().return_path is None
    monkeypatch.setenv("EMAIL_WORKER_REPLY_TO", '"Acme Help" <help@acme.com>')
    monkeypatch.setenv("EMAIL_WORKER_RETURN_PATH", "bounces+acme@mail.acme.com")
    settings = Settings()
    assert settings.reply_to_mailbox() == Mailbox("help@acme.com", "Acme Help")
    assert settings.return_path == "bounces+acme@mail.acme.com"
    monkeypatch.setenv("EMAIL_WORKER_REPLY_TO", " ")
    assert Settings().reply_to_mailbox() is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FROM_ADDRESS", "Acme <noreply@acme.com>, Bob <bob@acme.com>"),
        ("FROM_ADDRESS", "noreply@acme.com\r\nBcc: victim@example.org"),
        ("FROM_ADDRESS", "Acme\r\nBcc: victim@example.org <noreply@acme.com>"),
        ("FROM_ADDRESS", "Zoë <noreply@acme.com> x"),
        ("FROM_ADDRESS", "Zoë <nöreply@acme.com>"),
        ("FROM_ADDRESS", "Zoë <noreply>"),
        ("FROM_ADDRESS", "noreply@exämple.com"),
        ("FROM_ADDRESS", "nöreply@example.com"),
        ("FROM_ADDRESS", "=?utf-8?q?Acme?= <noreply@acme.com>"),
        ("FROM_ADDRESS", "Acme"),
        ("FROM_NAME", "Acme\r\nBcc: victim@example.org"),
        ("FROM_NAME", "Acme\u2028Support"),
        ("FROM_NAME", "=?utf-8?b?QWNtZQ==?="),
        ("REPLY_TO", "help@acme.com, other@acme.com"),
        ("REPLY_TO", "Help <help@acme.com>, Other <other@acme.com>"),
        ("REPLY_TO", "help@acme.com\nCc: victim@example.org"),
        ("RETURN_PATH", "Bounces <bounces@acme.com>"),
        ("RETURN_PATH", "bounces@-acme"),
        ("DKIM_DOMAIN", "acme .com"),
        ("DKIM_DOMAIN", "acme.com\r\nx.example"),
        ("DKIM_SELECTOR", "-bad-"),
    ],
)
def test_a_bad_sender_setting_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"EMAIL_WORKER_{name}", value)

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert name.lower() in {str(error["loc"][0]) for error in refused.value.errors()}


@pytest.mark.parametrize(
    "value", ["noreply@localhost", "Mail <noreply@mailhost>", "bounces@relay-internal"]
)
def test_an_internal_dotless_domain_is_accepted_as_before(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # FROM_ADDRESS took any single-@ address before the display-name change: an internal relay
    # setup with noreply@localhost must keep starting.
    monkeypatch.setenv("EMAIL_WORKER_FROM_ADDRESS", value)
    monkeypatch.setenv("EMAIL_WORKER_RETURN_PATH", value.rpartition("<")[2].rstrip(">"))
    settings = Settings()
    assert settings.from_address == value


# --- DKIM settings ---------------------------------------------------------------------------


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def ed25519_pem() -> bytes:
    return _pem(ed25519.Ed25519PrivateKey.generate())


def _dkim_env(monkeypatch: pytest.MonkeyPatch, key_file: Path | None, **names: str) -> None:
    if key_file is not None:
        monkeypatch.setenv("EMAIL_WORKER_DKIM_PRIVATE_KEY_FILE", str(key_file))
    for name, value in names.items():
        monkeypatch.setenv(f"EMAIL_WORKER_DKIM_{name.upper()}", value)


def test_dkim_settings_are_accepted_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ed25519_pem: bytes
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(ed25519_pem)
    _dkim_env(monkeypatch, key_file, domain="acme.com", selector="s2026")

    settings = Settings()

    assert (settings.dkim_domain, settings.dkim_selector) == ("acme.com", "s2026")
    assert settings.dkim_private_key_file == key_file


def _key_file_cases(tmp_path: Path) -> dict[str, bytes | None]:
    encrypted = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return {
        "RSA of 1024 bits": _pem(rsa.generate_private_key(65537, 1024)),
        "an EC key": _pem(ec.generate_private_key(ec.SECP256R1())),
        "an encrypted key": encrypted,
        "not PEM": b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "a missing file": None,
    }


def test_an_unusable_dkim_key_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for case, data in _key_file_cases(tmp_path).items():
        key_file = tmp_path / f"{case.replace(' ', '-')}.pem"
        if data is not None:
            key_file.write_bytes(data)
        _dkim_env(monkeypatch, key_file, domain="acme.com", selector="s1")

        with pytest.raises(ValidationError) as refused:
            Settings()

        errors = refused.value.errors()
        assert [str(e["loc"][0]) for e in errors] == ["dkim_private_key_file"], case
        assert "BEGIN" not in str(refused.value) and "bm90" not in str(refused.value), case


@pytest.mark.parametrize(
    ("with_key", "names", "missing"),
    [
        (True, {"domain": "acme.com"}, "DKIM_SELECTOR"),
        (True, {}, "DKIM_DOMAIN"),
        (False, {"domain": "acme.com", "selector": "s1"}, "DKIM_DOMAIN"),
        (False, {"selector": "s1"}, "DKIM_SELECTOR"),
    ],
)
def test_dkim_settings_come_all_three_or_none(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ed25519_pem: bytes,
    with_key: bool,
    names: dict[str, str],
    missing: str,
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(ed25519_pem)
    _dkim_env(monkeypatch, key_file if with_key else None, **names)

    with pytest.raises(ValidationError) as refused:
        Settings()

    (error,) = refused.value.errors()
    assert error["loc"] == ("dkim_private_key_file",)
    assert missing in error["msg"]


# --- the headers they give -------------------------------------------------------------------


def test_a_display_name_is_quoted_when_it_holds_specials() -> None:
    wire = build_message(_outgoing(sender_name='Acme, "Support"'))

    parsed = _parsed(wire)
    (address,) = parsed["From"].addresses
    assert (address.display_name, address.addr_spec) == ('Acme, "Support"', "noreply@acme.com")
    assert _raw_header(wire, "From") == '"Acme, \\"Support\\"" <noreply@acme.com>'


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Støtte",
        "Kundenservice der Müller & Söhne GmbH — Überweisungen, Rückfragen, Düsseldorf",
        "日本語の送信者名がとても長い場合にどのように折り返されるかを確認するためのテストです",
        "a" * 90 + "é",
    ],
)
def test_a_non_ascii_display_name_is_rfc2047_encoded_and_folded(name: str) -> None:
    wire = build_message(_outgoing(sender_name=name, reply_to=Mailbox("help@acme.com", name)))

    head = wire.split(b"\r\n\r\n")[0]
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    for header in ("From", "Reply-To"):
        raw = _raw_header(wire, header)
        assert raw.startswith("=?utf-8?q?") and raw.endswith(
            "<noreply@acme.com>" if header == "From" else "<help@acme.com>"
        )
        assert _decoded_name(raw) == name


def test_reply_to_is_added_only_when_configured_and_comes_from_no_template() -> None:
    without = _parsed(build_message(_outgoing()))
    with_reply = _parsed(build_message(_outgoing(reply_to=Mailbox("help@acme.com"))))

    assert without["Reply-To"] is None
    assert str(with_reply["Reply-To"]) == "help@acme.com"


@pytest.mark.parametrize(
    "sender",
    [
        {"sender_name": "Acme\r\nBcc: victim@example.org"},
        {"sender_name": "=?utf-8?q?Acme?="},
        {"reply_to": Mailbox("help@acme.com", "Help\nCc: victim@example.org")},
        {"reply_to": Mailbox("help@acme.com, victim@example.org")},
        {"reply_to": Mailbox("Help <help@acme.com>")},
    ],
)
def test_a_sender_field_that_would_smuggle_a_header_is_refused(sender: dict[str, object]) -> None:
    with pytest.raises(PermanentFailure) as refused:
        build_message(_outgoing(**sender))

    assert refused.value.reason is Reason.UNSAFE_CONTENT
    assert "victim" not in refused.value.detail


def test_the_envelope_sender_is_return_path_else_the_from_address() -> None:
    assert _outgoing().envelope_sender == "noreply@acme.com"
    assert _outgoing(envelope_from="bounces@acme.com").envelope_sender == "bounces@acme.com"


def test_the_pipeline_sends_from_the_configured_sender() -> None:
    settings = Settings(
        from_address="Acme <noreply@acme.com>",
        from_name="Zoë from Acme",
        reply_to="Help <help@acme.com>",
        return_path="bounces@mail.acme.com",
    )
    sender, mailer = settings.sender(), FakeMailer()
    pipeline = Pipeline(
        PipelineConfig(
            sender=sender.address,
            message_id_secret=b"k" * 32,
            callback_url=None,
            callback_allowed_hosts=(),
            host_allowed=host_allowed,
            sender_name=sender.name,
            reply_to=settings.reply_to_mailbox(),
            envelope_from=settings.return_path,
        ),
        FakeLedger(),
        FakeRecipients({}),
        FakeTemplates({"welcome": Template("welcome", None, "Hi", "<p>Hi</p>", None, "1")}),
        TemplateRenderer(),
        mailer,
        FakeNotifier(),
    )
    request = parse_message(
        b'{"request_id": "r-1", "template_code": "welcome", "to_email": "ann@example.org"}'
    )

    attempt = pipeline.attempt(request)

    assert attempt.failure is None
    (sent,) = mailer.sent
    assert (sent.sender, sent.sender_name) == ("noreply@acme.com", "Zoë from Acme")
    assert sent.reply_to == Mailbox("help@acme.com", "Help")
    assert sent.envelope_sender == "bounces@mail.acme.com"
    assert sent.message_id.endswith("@acme.com>")


# --- no template can set an address header (CONTRACT 11) ------------------------------------

ADDRESS_HEADERS = ("From", "Sender", "To", "Cc", "Bcc", "Reply-To")
HOSTILE = "evil@attacker.example"


def test_template_fields_cannot_be_mapped_onto_an_address_header() -> None:
    assert set(TEMPLATE_FIELD_NAMES) == {"subject", "html", "text", "version", "list_unsubscribe"}
    for name in ("from", "sender", "to", "cc", "bcc", "reply_to", "headers"):
        with pytest.raises(ValueError, match="unknown field"):
            parse_field_paths(f"{name}=data.{name}", TEMPLATE_FIELD_NAMES)


_keys = st.sampled_from(
    ["from", "From", "sender", "to", "cc", "bcc", "reply_to", "Reply-To", "headers", "envelope"]
)
_values = st.one_of(
    st.just(HOSTILE),
    st.just(f"Evil <{HOSTILE}>"),
    st.just({"From": HOSTILE, "Bcc": HOSTILE}),
    st.lists(st.just(HOSTILE), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(extra=st.dictionaries(_keys, _values, min_size=1), enveloped=st.booleans())
def test_no_template_answer_sets_an_address_header(
    extra: dict[str, object], enveloped: bool
) -> None:
    """Whatever else a template answer holds, the message's address headers are the configured
    sender and the resolved recipient only."""
    body: dict[str, object] = {"subject": "Hi {{ name }}", "html_body": "<p>x</p>", **extra}
    answer = {"success": True, "data": body} if enveloped else body
    template = template_from_answer("welcome", None, answer, template_reader())
    content = TemplateRenderer().render(template, {"name": "Ann"})
    outgoing = OutgoingEmail(
        "noreply@acme.com", RECIPIENT, "<1@acme.com>", content, sender_name="Acme"
    )

    wire = build_message(outgoing)

    assert HOSTILE.encode() not in wire
    parsed = _parsed(wire)
    present = {name: [str(v) for v in parsed.get_all(name) or []] for name in ADDRESS_HEADERS}
    assert {name: values for name, values in present.items() if values} == {
        "From": ["Acme <noreply@acme.com>"],
        "To": [RECIPIENT],
    }
