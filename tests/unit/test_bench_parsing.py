"""The benchmark's readers of /proc and of the sinks' counters, on fixed text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import machine, procstat
from benchmarks.sinks import SinkProcess

STAT = (
    "4242 (email worker (run)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 "
    "250 130 0 0 20 0 9 0 12345 300000000 20000 18446744073709551615"
)


def test_cpu_seconds_count_fields_after_a_name_with_spaces_and_parentheses() -> None:
    assert procstat.parse_cpu_seconds(STAT, ticks=100) == pytest.approx(3.8)


def test_cpu_seconds_with_children_add_the_exited_ones_waited_for() -> None:
    stat = STAT.replace(" 250 130 0 0 ", " 250 130 70 50 ")  # cutime 70, cstime 50 ticks

    assert procstat.parse_cpu_seconds(stat, ticks=100) == pytest.approx(3.8)
    assert procstat.parse_cpu_seconds(stat, ticks=100, children=True) == pytest.approx(5.0)


def test_status_lines_in_bytes() -> None:
    status = "Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"
    assert procstat.parse_status_kib(status, "VmHWM") == 123456 * 1024
    assert procstat.parse_status_kib(status, "VmRSS") == 100000 * 1024
    assert procstat.parse_status_kib(status, "VmSwap") == 0


def test_sample_of_this_process_and_of_a_gone_one() -> None:
    mine = procstat.sample(os.getpid())
    assert mine is not None
    assert mine.cpu_seconds > 0 and mine.peak_rss_bytes >= mine.rss_bytes > 0
    assert procstat.sample(2**22 + 17) is None  # above pid_max's default: never a process


def test_machine_description_parsers() -> None:
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n"
    assert machine.cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert machine.cpu_model("") == "unknown"
    assert machine.mem_total_gib("MemTotal:       24684544 kB\n") == pytest.approx(23.54, 0.01)


def test_sink_count_is_the_last_counter_printed(tmp_path: Path) -> None:
    sink = SinkProcess.__new__(SinkProcess)  # no process: only the log reader under test
    log = tmp_path / "sink.log"
    log.write_bytes(b"sess=0 quit=0 mesg=0\rsess=1 quit=0 mesg=1\rsess=1 quit=1 mesg=1999\r")
    sink._log = log
    assert sink.count() == 1999
    log.write_bytes(b"")
    assert sink.count() == 0


def test_command_name_keeps_spaces_and_parentheses() -> None:
    assert procstat.command_name(STAT) == "email worker (run)"


def test_cpu_of_commands_finds_this_process_by_its_name() -> None:
    name = procstat.command_name(Path(f"/proc/{os.getpid()}/stat").read_text())
    found = procstat.cpu_of_commands(frozenset({name}))
    assert os.getpid() in found and found[os.getpid()][0] == name
    assert procstat.cpu_of_commands(frozenset({"no-such-command-here"})) == {}
