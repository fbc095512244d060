"""The demo and its SMTP sink are an optional extra (``email-worker[demo]``): aiosmtpd is not a
runtime dependency, the worker's commands never import it, and ``email-worker demo`` without it
exits 2 with a message that says how to install it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# aiosmtpd made unimportable, as in an install without the extra.
_WITHOUT = "import sys; sys.modules['aiosmtpd'] = None; from email_worker.cli import main; "


def test_aiosmtpd_is_only_in_the_demo_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.startswith("aiosmtpd")]
    assert [r for r in project["optional-dependencies"]["demo"] if r.startswith("aiosmtpd")]
    assert "email-worker[demo]" in project["optional-dependencies"]["dev"]


def test_demo_without_the_extra_exits_2_and_says_how_to_install_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT + "sys.exit(main(['demo']))"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'email-worker[demo]'" in result.stderr


def test_the_worker_runs_without_the_extra() -> None:
    probe = (
        "import sys; sys.modules['aiosmtpd'] = None; "
        "import email_worker.cli, email_worker.app, email_worker.dlq.records; "
        "print('aiosmtpd' in sys.modules and sys.modules['aiosmtpd'] is not None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
