"""The key-generation commands of docs/sender-and-dkim.md work: run as written (``openssl``),
they give a key the worker accepts and a ``p=`` value against which what it signs verifies."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from email_worker.dkim import DkimSigner, load_signing_key
from email_worker.dkim.keys import SigningKey
from email_worker.ports import OutgoingEmail, RenderedEmail
from email_worker.render.mime import build_message
from tests.support.dkim import Verifier
from tests.support.services import skip_or_fail

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sender-and-dkim.md"


def _blocks() -> list[list[str]]:
    """The ``sh`` blocks of the guide that run ``openssl genpkey``, as lists of commands."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    return [block.strip().splitlines() for block in blocks if "openssl genpkey" in block]


def test_the_guide_has_one_block_per_algorithm() -> None:
    assert [block[0].split()[3] for block in _blocks()] == ["RSA", "ed25519"]


@pytest.mark.parametrize("index", [0, 1])
def test_the_guides_commands_make_a_key_whose_record_verifies(tmp_path: Path, index: int) -> None:
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl command is not installed")
    generate, public = _blocks()[index]
    subprocess.run(["bash", "-c", generate], cwd=tmp_path, check=True, capture_output=True)
    printed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", public], cwd=tmp_path, check=True, capture_output=True
    ).stdout.decode()
    (key_file,) = tmp_path.glob("*.pem")
    key = load_signing_key(key_file)
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"

    assert key.dns_record() == f"v=DKIM1; k={kind}; p={printed}"
    content = RenderedEmail("Hi", "<p>Hi</p>", "Hi", "welcome", "1")
    message = build_message(OutgoingEmail("noreply@acme.test", "ann@example.org", "<1@a>", content))
    signed = DkimSigner("acme.test", "s2026", key).sign(message)
    assert _verifier(key, printed, kind).verify(signed)


def _verifier(key: SigningKey, printed: str, kind: str) -> Verifier:
    verifier = Verifier(key)
    verifier.record = f"v=DKIM1; k={kind}; p={printed}".encode()  # exactly what was printed
    return verifier
