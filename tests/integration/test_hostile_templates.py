"""Hostile templates in a process of their own, with the shipped limits: each one ends in
``template_error`` within the time budget, and the process stays up and small.

The child process caps its own address space (2 GiB), so a renderer without bounds fails this
test with a ``MemoryError`` or a kill instead of taking the machine down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from email_worker.config import Settings
from tests.unit.test_render import BUDGET_DETAILS

EXPECTED = tuple(f"template_error: {detail}" for detail in BUDGET_DETAILS)

pytestmark = pytest.mark.integration

CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import PermanentFailure
from templates_client.template import Template
from tests.unit.test_render import HOSTILE

renderer = TemplateRenderer()  # the shipped defaults
renderer.render(Template("warm", None, "s", "{{ 1 }}", None, "v"), {})
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name, html in HOSTILE.items():
    started = time.thread_time()
    try:
        renderer.render(Template(name, None, "s", html, None, "v"), {"xs": [[1]] * 20000})
        outcome = "rendered"
    except PermanentFailure as failure:
        outcome = failure.reason.value + ": " + failure.detail
    except BaseException as exc:
        outcome = "crashed: " + type(exc).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "outcome": outcome, "seconds": time.thread_time() - started,
                      "grown_kib": peak - baseline}), flush=True)
"""


def test_hostile_templates_fail_fast_and_the_process_stays_small() -> None:
    budget = Settings.model_fields["max_render_seconds"].default
    root = Path(__file__).resolve().parents[2]

    child = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert child.returncode == 0, child.stderr[-2000:]
    results = [json.loads(line) for line in child.stdout.splitlines()]
    assert len(results) > 20
    for result in results:
        assert result["outcome"].startswith(EXPECTED), result
        assert result["seconds"] < budget + 0.5, result
    assert max(result["grown_kib"] for result in results) < 100 * 1024  # allowance: 32 MiB
