"""Standard Webhooks signing: the spec's published test vector, secrets, and verification."""

from __future__ import annotations

import base64

import pytest

from email_worker.signing import SignatureError, sign, signing_key, verify

# From the Standard Webhooks reference library's test suite (libraries/python/tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_spec_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_whsec_secret_is_base64_decoded_and_plain_secret_is_utf8() -> None:
    assert signing_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signing_key("plain-sécret") == "plain-sécret".encode()
    # The same characters without the prefix are a different key, hence a different signature.
    assert sign(SPEC_SECRET.removeprefix("whsec_"), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) != (
        SPEC_SIGNATURE
    )


def test_malformed_whsec_secret_is_refused() -> None:
    with pytest.raises(SignatureError):
        signing_key("whsec_not*base64")


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
