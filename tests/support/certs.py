"""Self-signed TLS certificates for the test servers, made with the ``openssl`` CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SelfSignedCert:
    cert: Path
    key: Path


def make_self_signed_cert(directory: Path) -> SelfSignedCert:
    """A certificate for ``localhost`` and ``127.0.0.1``. Raises ``RuntimeError`` without the
    ``openssl`` CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return SelfSignedCert(cert, key)


@pytest.fixture(scope="session", name="smtp_cert")
def smtp_cert_fixture(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    try:
        return make_self_signed_cert(tmp_path_factory.mktemp("smtp-cert"))
    except RuntimeError as exc:
        pytest.skip(str(exc))
