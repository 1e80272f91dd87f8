"""glibc malloc settings for the service's processes (the service and its store process).

Both churn through batches: payloads, rows, a commit's JSON arrays, SQLite pages. glibc keeps
what is freed inside its arenas, and the holes between live blocks stay resident: bench 3
(issue 15) found a third of the service's malloc arena free at 10,000 readings/s, never
given back. ``malloc_trim`` returns the free pages of every arena (``MADV_DONTNEED``, the live
blocks stay where they are); a daemon thread calls it every second. Blocks of 256 KiB and more
(a commit's JSON arrays, a fold's rows) get pages of their own, returned when freed: with glibc's
rising threshold they went into the arenas instead, and the service's arena crept from 60 to
85-92 MB over a 5-minute level of bench 3 (51-65 MB with the fixed one). Not glibc (musl,
macOS): nothing to tune."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading

ARENAS = 2  # M_ARENA_MAX: threads that allocate at once would get arenas of their own
TRIM_EVERY_S = 1.0  # a trim costs ~1 ms a MB it gives back (madvise), however often it runs
# M_MMAP_THRESHOLD: blocks this large get pages of their own, given back at free(). glibc's
# default starts at 128 KiB but rises to any larger block freed (up to 32 MiB), after which a
# commit's JSON arrays and a fold's rows land in the arenas between live blocks.
MMAP_THRESHOLD = 256 * 1024

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_started = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only: musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def trim() -> bool:
    """Give the arenas' free pages back now; False where there is no glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


def tune_malloc(trim_every_s: float = TRIM_EVERY_S) -> None:
    """Fewer arenas and a trimming thread (once a process); call before the process starts
    its threads."""
    global _started
    libc = _libc()
    if libc is None or _started:
        return
    _started = True
    with contextlib.suppress(AttributeError):
        libc.mallopt(_M_ARENA_MAX, ARENAS)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # fixed: no longer rises
    malloc_trim = libc.malloc_trim
    malloc_trim.argtypes = [ctypes.c_size_t]
    wait = threading.Event().wait

    def trimmer() -> None:
        while True:
            wait(trim_every_s)
            malloc_trim(0)  # ctypes releases the interpreter lock for the call

    threading.Thread(target=trimmer, name="malloc-trim", daemon=True).start()
