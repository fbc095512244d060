"""ops/allocator.py: the arena cap, checked on the real glibc in a fresh interpreter (the cap
must come before the threads, so it cannot be tested in this multi-threaded process)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from email_worker.ops.allocator import cap_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Threads each allocate and free buffers of the size a rendered message has, all alive at
# once; then glibc's own report (malloc_info) lists its arenas as <heap nr=...>.
_PROBE = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    from email_worker.ops.allocator import cap_arenas
    capped = cap_arenas() if sys.argv[1] == "cap" else False
    start, done = threading.Barrier(16), threading.Barrier(16)
    def work():
        start.wait()  # every thread is alive before any allocates
        kept = [bytes(40_000) for _ in range(50)]
        done.wait()
        del kept
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    path = os.path.join(tempfile.mkdtemp(), "info.xml")
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(capped, open(path).read().count("<heap nr="))
    """
)


def _arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.split()
    return out[0], int(out[1])


@glibc
def test_capped_process_uses_one_arena() -> None:
    assert _arenas("cap") == ("True", 1)


@glibc
def test_without_the_cap_threads_get_arenas_of_their_own() -> None:
    # The control: the probe can see more than one (glibc allows 8 per core).
    capped, arenas = _arenas("none")
    assert capped == "False" and arenas > 2


@glibc
def test_an_operators_setting_wins() -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    capped, arenas = _arenas("cap", env)
    assert capped == "False"  # nothing changed by us
    assert 1 < arenas <= 4  # glibc read the variable itself


def test_not_applied_when_the_environment_sets_it() -> None:
    assert cap_arenas({"MALLOC_ARENA_MAX": "8"}) is False
