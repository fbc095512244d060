"""The benchmark's readers of /proc and of the sinks' counters, on fixed text."""

from __future__ import annotations

import os
import threading
import time
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


STATUS = (
    "Name:\temail worker (run)\nState:\tS (sleeping)\nVmHWM:\t  123456 kB\nThreads:\t36\n"
    "voluntary_ctxt_switches:\t4500\nnonvoluntary_ctxt_switches:\t120\n"
)


def test_system_seconds_are_stime_only_after_a_name_with_spaces_and_parentheses() -> None:
    assert procstat.parse_system_seconds(STAT, ticks=100) == pytest.approx(1.3)  # stime 130


def test_status_counts_and_context_switches() -> None:
    assert procstat.parse_status_count(STATUS, "Threads") == 36
    assert procstat.parse_status_count(STATUS, "NoSuchKey") == 0
    # "voluntary_ctxt_switches" must not also match the "nonvoluntary_..." line
    assert procstat.parse_context_switches(STATUS) == 4620
    assert procstat.parse_context_switches("Name:\tzombie\n") == 0


def test_switches_between_two_readings_per_thread() -> None:
    before = {10: 100, 11: 50, 12: 7}  # thread 12 ends before the second reading
    after = {10: 130, 11: 50, 13: 9}  # thread 13 starts in between: all of its own count
    assert procstat.switches_between(before, after) == 30 + 0 + 9
    assert procstat.switches_between({14: 500}, {14: 3}) == 3  # a reused id counts from 0


def test_activity_of_this_process_sums_its_threads() -> None:
    started, finish = threading.Event(), threading.Event()

    def waits() -> None:
        for _ in range(3):  # each sleep leaves the core: one voluntary switch at least
            time.sleep(0.001)
        started.set()
        finish.wait()

    thread = threading.Thread(target=waits)
    thread.start()
    started.wait()
    try:
        mine = procstat.activity(os.getpid())
    finally:
        finish.set()
        thread.join()
    assert mine is not None
    assert mine.threads >= 2 and len(mine.switches) >= 2
    assert thread.native_id is not None and mine.switches.get(thread.native_id, 0) >= 3
    assert mine.system_seconds >= 0
    assert procstat.activity(2**22 + 17) is None
