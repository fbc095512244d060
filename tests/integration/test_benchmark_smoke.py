"""The benchmark harness end to end with tiny numbers: the real worker processes, the builtin
sink (so CI needs no Postfix), every phase, the report and its JSON. Proves the harness works,
not how fast anything is."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.http_services import CALLBACK_PATH, HttpServices
from benchmarks.processes import Processes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Enough for every part's CPU to span several 10 ms accounting ticks on a fast machine (50 left
# Postgres at 0 or 1 tick, so "it was measured" could not be told from "it was missed").
MESSAGES = 400


@pytest.mark.timeout(300)
def test_benchmark_runs_every_phase_and_writes_its_report(
    tmp_path: Path, amqp_url: str, postgres_admin_url: str
) -> None:
    results, figures = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = [
        sys.executable, "-m", "benchmarks", "--messages", str(MESSAGES), "--workers", "1",
        "--rounds", "2",
        "--naive-messages", "10", "--baseline-messages", "20", "--realistic-messages", "100",
        "--capacity-seconds", "0.3", "--capacity-messages", "200",
        "--half-rate-seconds", "1", "--sink", "builtin", "--timeout", "40",
        "--amqp-url", amqp_url, "--database-url", postgres_admin_url,
        "--write-results", str(results), "--json", str(figures),
    ]  # fmt: skip
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(figures.read_text())
    assert data["errors"] == []
    assert [run["round_number"] for run in data["runs"]] == [1, 2]
    for worker in data["runs"]:
        assert worker["sent"] == worker["callbacks"] == worker["sink_accepted"] == MESSAGES
        assert worker["emails_per_s"] > 0 and worker["latency"]["count"] == MESSAGES
        names = sorted(p["name"] for p in worker["processes"])
        assert names == ["callbacks", "run0"]
        assert all(p["cpu_seconds"] > 0 and p["peak_rss_bytes"] > 0 for p in worker["processes"])
        for proc in worker["processes"]:  # the kernel's figures of the same window
            assert 0 <= proc["system_seconds"] <= proc["cpu_seconds"] + 0.02  # tick rounding
            assert proc["context_switches"] > 0 and proc["threads"] > 1
    slower = min(run["emails_per_s"] for run in data["runs"])  # the median of two: the lower
    assert data["half_rate"]["sent"] == data["half_rate"]["messages"] >= 50
    assert data["half_rate"]["paced_rate"] == pytest.approx(slower / 2)
    assert data["limited"]["sent"] == data["limited"]["callbacks"] == MESSAGES  # RATE_LIMIT set
    assert data["naive"]["sent"] == data["naive"]["sink_accepted"] == 10
    for kind in ("tuned", "asyncio"):  # the stronger baselines, measured in the same run
        stronger = data["stronger"][kind]
        assert stronger["sent"] == stronger["callbacks"] == stronger["sink_accepted"] == 20
        assert stronger["processes"][0]["cpu_seconds"] > 0
    assert data["sink_capacity"]["one_connection"] > 0 and data["consume_capacity"] > 0
    text = results.read_text()
    assert "## The worker" in text and "## Naive baseline" in text and "x naive" in text
    assert "builtin" in text  # the machine section names the sink
    assert set(worker["machine_cpu"]) == {"PostgreSQL", "RabbitMQ", "SMTP sink", "harness"}
    assert worker["machine_cpu"]["PostgreSQL"] > 0 and worker["machine_cpu"]["harness"] > 0
    assert "## Where the cores go" in text
    assert "### What the kernel does for the worker's processes (same window)" in text
    assert [r["round_number"] for r in data["realistic"]] == [1, 2]
    for real in data["realistic"]:  # recipient 13 refused with 550; 7 and 57 get 451 once
        assert (real["sent"], real["failed"], real["callbacks"]) == (99, 1, 99)
        assert real["workload"] == "realistic"
    assert "## Realistic workload" in text
    signed = data["signed"]  # the peak configuration again, every message DKIM-signed
    assert signed["sent"] == signed["sink_accepted"] == MESSAGES
    assert "## DKIM's cost" in text
    assert "## Stronger baselines" in text and ">= 3x the better stronger baseline" in text
    assert "| 1 (round 2) |" in text and "ran 2 times, the configurations alternating" in text


def test_processes_registry_stops_what_it_started(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    child = processes.start("sleeper", ["sleep", "30"])
    processes.stop_all()
    assert child.poll() is not None
    assert (tmp_path / "sleeper.log").exists()


def test_http_services_keep_alive_pipelining_and_split_bodies() -> None:
    services = HttpServices().start()
    host, port = services.url.removeprefix("http://").split(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/api/v1/templates/welcome?lang=en")
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["data"]["version"] == "1"
        event = json.dumps({"notification_id": "n-1", "status": "delivered"}).encode()
        conn.request("POST", CALLBACK_PATH, body=event)  # same connection
        assert conn.getresponse().read() == b'{"success": true}'
        conn.request("POST", "/elsewhere", body=b"{}")
        assert conn.getresponse().status == 404
        conn.close()

        with socket.create_connection((host, int(port)), timeout=5) as raw:
            head = f"POST {CALLBACK_PATH} HTTP/1.1\r\nContent-Length: {len(event)}\r\n\r\n"
            raw.sendall(head.encode() + event[:5])  # a body split across writes ...
            time.sleep(0.05)
            second = json.dumps({"notification_id": "n-2", "status": "failed"}).encode()
            pipelined = f"POST {CALLBACK_PATH} HTTP/1.1\r\nContent-Length: {len(second)}\r\n"
            raw.sendall(event[5:] + pipelined.encode() + b"Connection: close\r\n\r\n" + second)
            received = b""
            while chunk := raw.recv(4096):  # ... and the server closes after the second
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 2
        assert [a[1:] for a in services.callbacks.arrivals] == [
            ("n-1", "delivered"), ("n-1", "delivered"), ("n-2", "failed"),
        ]  # fmt: skip
        assert list(services.callbacks.delivered()) == ["n-1"]
    finally:
        services.stop()
