"""The benchmark harness end to end with tiny numbers: the real worker processes, the builtin
sink (so CI needs no Postfix), every phase, the report and its JSON. Proves the harness works,
not how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.processes import Processes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_phase_and_writes_its_report(
    tmp_path: Path, amqp_url: str, postgres_admin_url: str
) -> None:
    results, figures = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = [
        sys.executable, "-m", "benchmarks", "--messages", "50", "--workers", "1",
        "--naive-messages", "10", "--capacity-seconds", "0.3", "--capacity-messages", "200",
        "--half-rate-seconds", "1", "--sink", "builtin", "--timeout", "40",
        "--amqp-url", amqp_url, "--database-url", postgres_admin_url,
        "--write-results", str(results), "--json", str(figures),
    ]  # fmt: skip
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=100, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert data["errors"] == []
    [worker] = data["runs"]
    assert worker["sent"] == worker["callbacks"] == worker["sink_accepted"] == 50
    assert worker["emails_per_s"] > 0 and worker["latency"]["count"] == 50
    names = sorted(p["name"] for p in worker["processes"])
    assert names == ["callbacks", "run0"]
    assert all(p["cpu_seconds"] > 0 and p["peak_rss_bytes"] > 0 for p in worker["processes"])
    assert data["half_rate"]["sent"] == data["half_rate"]["messages"] >= 50
    assert data["half_rate"]["paced_rate"] == pytest.approx(worker["emails_per_s"] / 2)
    assert data["naive"]["sent"] == data["naive"]["sink_accepted"] == 10
    assert data["sink_capacity"]["one_connection"] > 0 and data["consume_capacity"] > 0
    text = results.read_text()
    assert "## The worker" in text and "## Naive baseline" in text and "x naive" in text
    assert "builtin" in text  # the machine section names the sink


def test_processes_registry_stops_what_it_started(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    child = processes.start("sleeper", ["sleep", "30"])
    processes.stop_all()
    assert child.poll() is not None
    assert (tmp_path / "sleeper.log").exists()
