"""RELAYS parsing (email_worker/relays/urls.py): the syntax, the names, the refusals, and that
no credential ever reaches a name, a repr or an error message (hypothesis)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from email_worker.config import Settings
from email_worker.relays.urls import (
    RelayKind,
    RelayUrlError,
    check_implemented,
    parse_relays,
    smtp_spec,
    split_urls,
)


def test_a_list_keeps_its_order_kinds_ports_and_credentials() -> None:
    specs = parse_relays(
        "smtp://relay.example.com:2525, smtp+starttls://ann:s%40cret@mail.example.com,"
        "smtps://[2001:db8::1]?weight=3&name=backup,ses://eu-west-1,sendgrid://,"
        "mailgun://mg.example.com?weight=0,postmark://"
    )
    assert [(s.kind, s.name, s.host, s.port, s.weight) for s in specs] == [
        (RelayKind.SMTP, "smtp://relay.example.com:2525", "relay.example.com", 2525, None),
        (
            RelayKind.SMTP_STARTTLS,
            "smtp+starttls://mail.example.com:587",
            "mail.example.com",
            587,
            None,
        ),
        (RelayKind.SMTPS, "backup", "2001:db8::1", 465, 3),
        (RelayKind.SES, "ses://eu-west-1", "eu-west-1", None, None),
        (RelayKind.SENDGRID, "sendgrid://", "", None, None),
        (RelayKind.MAILGUN, "mailgun://mg.example.com", "mg.example.com", None, 0),
        (RelayKind.POSTMARK, "postmark://", "", None, None),
    ]
    assert (specs[1].username, specs[1].password) == ("ann", "s@cret")  # percent-decoded
    assert "s@cret" not in repr(specs[1]) and "ann" not in repr(specs[1])


def test_an_ipv6_relay_is_named_with_brackets() -> None:
    (spec,) = parse_relays("smtp://[::1]:2525")
    assert (spec.host, spec.name) == ("::1", "smtp://[::1]:2525")


def test_a_comma_inside_a_password_stays_in_its_url() -> None:
    assert split_urls("smtp://u:a,b@h1:25, ,smtp://h2:25,") == [
        "smtp://u:a,b@h1:25",
        "smtp://h2:25",
    ]
    first, second = parse_relays("smtp://u:a,b@h1:25,smtp://h2:25")
    assert (first.password, first.name, second.name) == ("a,b", "smtp://h1:25", "smtp://h2:25")


def test_the_smtp_settings_make_one_relay_named_like_a_url() -> None:
    spec = smtp_spec("Relay.Example.com", 587, "starttls", "ann", "pw")
    assert (spec.kind, spec.name, spec.username, spec.password) == (
        RelayKind.SMTP_STARTTLS,
        "smtp+starttls://relay.example.com:587",
        "ann",
        "pw",
    )
    assert smtp_spec("::1", 25, "none", None, None).name == "smtp://[::1]:25"
    assert smtp_spec("h", 465, "tls", None, None).kind is RelayKind.SMTPS


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no relay URL"),
        ("http://relay:25", "unknown kind"),
        ("relay.example.com:25", "unknown kind"),
        ("smtp://relay:99999", "port"),
        ("smtp://relay:0", "port"),
        ("smtp://relay:25/path", "no path"),
        ("smtp://relay:25#x", "no path"),
        ("smtp://user@relay:25", "both a user and a password"),
        ("smtp://:pw@relay:25", "both a user and a password"),
        ("smtp://relay:25?weight=-1", "weight"),
        ("smtp://relay:25?weight=10000", "weight"),
        ("smtp://relay:25?priority=1", "weight=N, name=NAME, stream=ID"),
        ("smtp://relay:25?weight=1&weight=2", "once each"),
        ("smtp://relay:25?name=a%20b", "name must be"),
        ("smtp://relay:25?name=", "name must be"),
        ("smtp://:25", "host"),
        ("smtp://bad_host!:25", "host"),
        ("smtp://rélay.example.com:25", "host"),
        ("ses://", "region"),
        ("ses://europe", "region"),
        ("ses://key:secret@eu-west-1", "own settings"),
        ("sendgrid://api.sendgrid.com", "no host"),
        ("postmark://:443", "no port"),
        ("mailgun://", "sending domain"),
        ("mailgun://10.0.0.1", "sending domain"),
        ("smtp://a:25,smtp://a:25", "same name as relay 1"),
        ("smtp://a:25\n", "control characters"),
        (",".join(f"smtp://h{n}:25" for n in range(17)), "at most 16 relays"),
        ("smtp://h:25" + " " * 16_384, "at most 16384 characters"),
    ],
)
def test_bad_urls_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(RelayUrlError, match=says):
        parse_relays(text)


def test_every_kind_is_available_now_that_the_providers_are_built() -> None:
    text = "smtp://a:25,ses://eu-west-1,sendgrid://,mailgun://mg.example.com,postmark://?name=pm"
    assert len(check_implemented(parse_relays(text))) == 5


def test_only_postmark_takes_a_message_stream() -> None:
    spec = parse_relays("postmark://?stream=broadcast-1&name=bulk")[0]
    assert (spec.name, spec.stream) == ("bulk", "broadcast-1")
    assert parse_relays("postmark://")[0].stream is None
    with pytest.raises(RelayUrlError, match="relay 1: only postmark:// takes stream="):
        parse_relays("sendgrid://?stream=x")
    with pytest.raises(RelayUrlError, match="stream must be"):
        parse_relays("postmark://?stream=a%20b")


def test_a_relay_may_carry_its_own_rate_and_its_name_stays_without_query() -> None:
    first, second, third = parse_relays(
        "smtp://u:s3cret@relay.example.com:587?rate=14&weight=2,ses://eu-west-1?rate=0.5,sendgrid://"
    )
    assert (first.name, first.rate, first.weight) == ("smtp://relay.example.com:587", 14.0, 2)
    assert (second.name, second.rate, third.rate) == ("ses://eu-west-1", 0.5, None)


@pytest.mark.parametrize(
    "rate", ["0", "0.0", "-1", "inf", "nan", "1e3", "abc", "", "1,5", " 2", "1234567"]
)
def test_a_rate_must_be_a_plain_number_of_emails_per_second_above_zero(rate: str) -> None:
    with pytest.raises(RelayUrlError, match="relay 1: rate must be emails per second above 0"):
        parse_relays(f"smtp://relay:25?rate={rate}")


@given(st.text(max_size=12))
def test_any_rate_text_gives_a_positive_finite_rate_or_a_relay_url_error(text: str) -> None:
    try:
        (spec,) = parse_relays(f"smtp://relay:25?rate={quote(text, safe='')}")
    except RelayUrlError as error:
        assert "relay 1" in str(error)
    else:
        assert spec.rate is not None and 0 < spec.rate < 1e7 and spec.name == "smtp://relay:25"


def test_a_name_may_not_hold_the_password() -> None:
    with pytest.raises(RelayUrlError, match="may not hold its password"):
        parse_relays("smtp://u:Secret9@relay:25?name=relay-Secret9")


def test_the_setting_names_itself_and_never_echoes_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_WORKER_RELAYS", "smtp://u:Hunter2Pw@relay:25/x")
    with pytest.raises(ValidationError) as refused:
        Settings()
    (error,) = refused.value.errors()
    assert error["loc"] == ("relays",)
    assert "relay 1" in error["msg"] and "Hunter2Pw" not in error["msg"]
    assert "Hunter2Pw" not in str(refused.value)


def test_relays_may_come_from_a_file_and_override_the_smtp_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "relays"
    secret.write_text("smtp+starttls://u:pw@a.example.com:587,smtp://b.example.com:25\n")
    monkeypatch.setenv("EMAIL_WORKER_RELAYS_FILE", str(secret))
    monkeypatch.setenv("EMAIL_WORKER_SMTP_HOST", "ignored.example.com")
    specs = Settings().relay_specs()
    assert [s.name for s in specs] == [
        "smtp+starttls://a.example.com:587",
        "smtp://b.example.com:25",
    ]
    assert "pw" not in repr(Settings())


def test_without_relays_the_smtp_settings_make_the_one_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_WORKER_SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("EMAIL_WORKER_SMTP_PORT", "465")
    monkeypatch.setenv("EMAIL_WORKER_SMTP_SECURITY", "tls")
    monkeypatch.setenv("EMAIL_WORKER_SMTP_USERNAME", "ann")
    monkeypatch.setenv("EMAIL_WORKER_SMTP_PASSWORD", "pw")
    (spec,) = Settings().relay_specs()
    assert (spec.name, spec.username, spec.password) == (
        "smtps://mail.example.com:465",
        "ann",
        "pw",
    )


# --- properties ---------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
# Any printable password, with a marker that cannot appear in a host, scheme or message.
passwords = st.text(
    st.characters(codec="utf-8", min_codepoint=33, max_codepoint=0x2FFF),
    min_size=1,
    max_size=30,
).map(lambda text: f"§{text}§")
users = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
kinds = st.sampled_from(["smtp", "smtp+starttls", "smtps"])


@settings(max_examples=300)
@given(kinds, hosts, st.integers(1, 65535), users, passwords, st.none() | st.integers(0, 9999))
def test_any_url_with_encoded_credentials_round_trips_and_hides_them(
    kind: str, host: str, port: int, user: str, password: str, weight: int | None
) -> None:
    query = "" if weight is None else f"?weight={weight}"
    url = f"{kind}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}{query}"
    (spec,) = parse_relays(url)
    assert (spec.kind, spec.host, spec.port, spec.weight) == (kind, host, port, weight)
    assert (spec.username, spec.password) == (user, password)
    assert spec.name == f"{kind}://{host}:{port}"
    assert password not in spec.name and password not in repr(spec)


@settings(max_examples=500)
@given(kinds, hosts, passwords, st.text(max_size=40), st.text(max_size=40))
def test_no_error_ever_echoes_a_password(
    kind: str, host: str, password: str, before: str, after: str
) -> None:
    # The raw (unencoded) password, with junk around it: whatever breaks, the message names
    # the relay by position, never by its text.
    text = f"{before}{kind}://user:{password}@{host}{after}"
    try:
        specs = parse_relays(text)
    except RelayUrlError as error:
        assert password not in str(error)
        assert "§" not in str(error)
    else:
        assert all("§" not in spec.name for spec in specs)
