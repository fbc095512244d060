"""Standard Webhooks signing: the spec's published test vector, secrets (checked against the
reference ``standardwebhooks`` library), the shipped example secrets, and verification."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from standardwebhooks import Webhook

from email_worker.callbacks.signing import SignatureError, sign, signing_key, verify
from email_worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]

# From the Standard Webhooks reference library's test suite (libraries/python/tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_spec_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_whsec_secret_is_base64_decoded() -> None:
    assert signing_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


@pytest.mark.parametrize(
    "secret",
    [
        "plain-secret-that-is-long-enough-to-be-a-key",  # legacy: used to be raw UTF-8 bytes
        SPEC_SECRET.removeprefix("whsec_"),  # bare base64: ambiguous with a plain secret
        "whsec_not*base64",
        "whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # URL-safe alphabet
        "whsec_" + base64.b64encode(b"k" * 16).decode(),  # shorter than 24 bytes
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # longer than 64 bytes
        "whsec_A",
        "whsec_",
    ],
)
def test_other_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(SignatureError) as refused:
        signing_key(secret)
    payload = secret.removeprefix("whsec_")
    if len(payload) >= 8:  # shorter ones are substrings of any text
        assert payload not in str(refused.value)
    assert "whsec_" in str(refused.value)  # says what to give instead


@given(st.binary(min_size=24, max_size=64), st.booleans())
def test_our_key_is_the_reference_librarys_key(key: bytes, padded: bool) -> None:
    encoded = base64.b64encode(key).decode()
    secret = "whsec_" + (encoded if padded else encoded.rstrip("="))
    assert signing_key(secret) == key
    when = datetime.now(tz=UTC)
    reference = Webhook(secret).sign("msg_1", when, '{"a":1}')
    assert reference == sign(secret, "msg_1", int(when.timestamp()), b'{"a":1}')


def test_a_legacy_plain_secret_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(callback_secret=SecretStr("dev-only-callback-secret-change-me"))
    (error,) = refused.value.errors()
    assert error["loc"] == ("callback_secret",)
    assert "dev-only" not in error["msg"] and "whsec_" in error["msg"]
    empty = Settings(callback_secret=SecretStr(""))
    assert empty.callback_secret is None  # empty: callbacks go unsigned, as before


def shipped_secrets() -> dict[str, str]:
    compose = (ROOT / "deploy/compose/dev-secrets/callback-secret").read_text().rstrip("\r\n")
    overlay = yaml.safe_load((ROOT / "deploy/k8s/overlays/example/kustomization.yaml").read_text())
    (literals,) = [g["literals"] for g in overlay["secretGenerator"]]
    (k8s,) = [v.split("=", 1)[1] for v in literals if v.startswith("callback-secret=")]
    return {"compose": compose, "k8s": k8s}


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_shipped_example_secrets_load_in_the_worker_and_the_reference_library(where: str) -> None:
    secret = shipped_secrets()[where]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", secret)
    settings = Settings(callback_secret=SecretStr(secret))
    assert settings.callback_secret is not None
    when = datetime.now(tz=UTC)
    body = '{"status":"delivered"}'
    header = sign(secret, "msg_x", int(when.timestamp()), body.encode())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": header,
    }
    assert Webhook(secret).verify(body, headers) == {"status": "delivered"}


def test_the_dev_secret_keeps_the_signatures_of_the_old_plain_one() -> None:
    # The compose secret was the plain "dev-only-callback-secret-change-me", used as raw bytes:
    # its whsec_ form is the same key, so a gateway verifying it the old way still verifies.
    key = signing_key(shipped_secrets()["compose"])
    assert key == b"dev-only-callback-secret-change-me"


def test_verify_accepts_the_spec_vector_within_tolerance() -> None:
    verify(
        SPEC_SECRET,
        SPEC_ID,
        str(SPEC_TIMESTAMP),
        SPEC_BODY,
        SPEC_SIGNATURE,
        now=SPEC_TIMESTAMP + 299,
    )


def test_verify_accepts_one_valid_signature_among_several() -> None:
    header = f"v1,bm90LXRoaXM= v2,whatever {SPEC_SIGNATURE}"
    verify(SPEC_SECRET, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, header, now=SPEC_TIMESTAMP)


@pytest.mark.parametrize(
    ("webhook_id", "timestamp", "body", "header", "now"),
    [
        (SPEC_ID, str(SPEC_TIMESTAMP), b'{"test": 2432232315}', SPEC_SIGNATURE, SPEC_TIMESTAMP),
        ("msg_other", str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, SPEC_TIMESTAMP),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, SPEC_TIMESTAMP + 301),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, SPEC_TIMESTAMP - 301),
        (SPEC_ID, "yesterday", SPEC_BODY, SPEC_SIGNATURE, SPEC_TIMESTAMP),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, "", SPEC_TIMESTAMP),
        (SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE[:-2] + "é=", SPEC_TIMESTAMP),
    ],
    ids=["body", "id", "too-old", "too-new", "bad-timestamp", "no-signature", "non-ascii"],
)
def test_verify_refuses(
    webhook_id: str, timestamp: str, body: bytes, header: str, now: float
) -> None:
    with pytest.raises(SignatureError):
        verify(SPEC_SECRET, webhook_id, timestamp, body, header, now=now)
