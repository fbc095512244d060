"""The C allocator's arenas, capped before a service starts its threads.

glibc's ``malloc`` gives each new thread an arena of its own, up to eight per core, and an
arena keeps what its thread freed for that thread's next allocations. ``run`` has ~36 threads
(``CONCURRENCY`` workers, pika's, the group commit, the log writer, ...) and Python asks
``malloc`` for every object over 512 bytes: each worker thread renders, signs and sends 20-60 KB
messages, so each arena ends up holding a few megabytes nobody else can reuse. One arena is
enough: nearly every ``malloc`` of a Python process runs under the GIL, so threads hardly ever
contend for it. Measured with ``make bench``'s realistic workload (2 processes, 3,000 emails,
alternating runs): peak RSS per ``run`` process 222-224 MiB with glibc's default, 145-148 MiB
with two arenas, 138-139 MiB with one, CPU per email the same within the runs' spread
(8.4-8.9 ms). Python's own small-object allocator does not use ``malloc``'s arenas, so this
touches only the larger buffers.

``cap_arenas`` calls ``mallopt(M_ARENA_MAX, 1)``, which is what ``MALLOC_ARENA_MAX=1`` in the
environment does at start-up. Hazard: glibc fixes its arena limit when it first needs a second
arena, so the call must come before any thread is started; ``cli.main`` makes it first. An
operator's own ``MALLOC_ARENA_MAX`` wins (glibc has read it already: nothing is changed), and
elsewhere (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 1
ENV = "MALLOC_ARENA_MAX"


def cap_arenas(environ: Mapping[str, str] = os.environ, arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at ``arenas`` unless the environment sets ``MALLOC_ARENA_MAX``;
    whether the cap was set. Never raises."""
    if ENV in environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
