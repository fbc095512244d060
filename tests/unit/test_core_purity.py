"""The core is pure: importing any core module, in a fresh interpreter, loads no adapter
library, not even indirectly (a package ``__init__`` that imports one counts). The adapters
(pika, psycopg2, smtplib, celery, httpx, http.client, pybreaker, cryptography, botocore...) are
imported only inside their own sub-packages, wired in ``email_worker.app``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = (
    "email_worker.handler",
    "email_worker.pipeline",
    "email_worker.disposition",
    "email_worker.ports",
    "email_worker.message_ids",
    "email_worker.priority",
    "email_worker.backlog",
    "email_worker.render.renderer",
    "email_worker.suppression.policy",
    "email_worker.suppression.entries",
    "email_worker.reports",  # the report parsers and their intake, every module of them
    "email_worker.relays",  # the package: every module in it
    "email_worker.pacing",  # rate limits and throttling: every module in it
    "schemas.schedule",
    # Pure modules of the HTTP providers' package: the settings read credentials at start-up.
    "email_worker.providers.credentials",
    "email_worker.providers.answers",
)
ADAPTERS = (
    "pika",
    "psycopg2",
    "smtplib",
    "celery",
    "httpx",
    "http.client",
    "pybreaker",
    "opentelemetry",
    "cryptography",
    "redis",
    "botocore",
)

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


# Where each adapter library may be imported (a statement naming it), by path prefix.
HOMES = {
    "pika": ("email_worker/broker/",),
    "psycopg2": ("email_worker/ledger/",),
    "smtplib": ("email_worker/smtp/",),
    "celery": ("email_worker/callbacks/",),
    "http.client": ("email_worker/callbacks/",),
    # The template service client; the HTTP API providers (SES signs with botocore's SigV4).
    "httpx": ("templates_client/", "email_worker/providers/"),
    "botocore": ("email_worker/providers/",),
    "pybreaker": ("templates_client/",),
    "aiosmtpd": ("email_worker/demo/",),
    "opentelemetry": ("email_worker/tracing/",),
    "redis": ("email_worker/redis_store/",),
    # DKIM signatures, unsubscribe tokens, the providers' webhook signatures.
    "cryptography": ("email_worker/dkim/", "email_worker/suppression/", "email_worker/webhooks/"),
}
# Not moved yet: the callback URL policy still parses URLs with httpx (one parser for the check
# and the sender, but not the sender's own urllib).
PENDING = {("email_worker/callbacks/url_policy.py", "httpx")}


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_each_adapter_library_is_imported_only_in_its_own_package() -> None:
    root = Path(__file__).resolve().parents[2]
    strays = []
    for top in ("email_worker", "templates_client"):
        for path in sorted((root / top).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            for name in _imported(path):
                library = next(
                    (lib for lib in HOMES if name == lib or name.startswith(lib + ".")), None
                )
                if library is None or relative.startswith(HOMES[library]):
                    continue
                if (relative, library) not in PENDING:
                    strays.append(f"{relative} imports {name}")
    assert strays == []
