"""The core is pure: importing any core module, in a fresh interpreter, loads no adapter
library, not even indirectly (a package ``__init__`` that imports one counts). The adapters
(pika, psycopg2, smtplib, celery, httpx, http.client, pybreaker) are imported only inside their
own sub-packages, wired in ``email_worker.app``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE = (
    "email_worker.handler",
    "email_worker.pipeline",
    "email_worker.disposition",
    "email_worker.ports",
    "email_worker.message_ids",
    "email_worker.render.renderer",
)
ADAPTERS = ("pika", "psycopg2", "smtplib", "celery", "httpx", "http.client", "pybreaker")

_PROBE = """
import importlib, json, pkgutil, sys
module = importlib.import_module(sys.argv[1])
names = [sys.argv[1]]
if hasattr(module, "__path__"):  # a package: every module in it
    names += [m.name for m in pkgutil.walk_packages(module.__path__, sys.argv[1] + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.argv[2:]) & set(sys.modules))))
"""


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_adapter_library(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *ADAPTERS],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == []
