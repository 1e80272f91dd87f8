"""ingest.malloc: the freed heap is given back, and the trimming thread starts once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# 160 MB of 8-KB blocks (malloc'd, not pymalloc), every 16th kept: the rest is free memory
# inside the arena, between live blocks, which glibc does not give back by itself.
FRAGMENT = textwrap.dedent(
    """
    import threading
    from pathlib import Path

    from ingest import malloc

    def anon_kb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    blocks = [bytes(8192 - 33) for _ in range(20_000)]
    kept = blocks[::16]
    del blocks
    before = anon_kb()
    MODE
    print(before, anon_kb(), sum(t.name == "malloc-trim" for t in threading.enumerate()))
    """
)


def _run(mode: str) -> tuple[int, int, int]:
    code = FRAGMENT.replace("MODE", mode)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, after, threads = (int(x) for x in out)
    return before, after, threads


def test_trim_gives_back_the_free_pages_between_live_blocks() -> None:
    before, after, _ = _run("assert malloc.trim()")
    assert before > 100_000  # the freed blocks were still resident
    assert after < before - 100_000  # most of the 150 MB freed is given back


def test_without_trim_the_free_pages_stay() -> None:
    before, after, _ = _run("pass")
    assert after > before - 20_000  # what the test above relies on: glibc keeps them


def test_tune_malloc_starts_one_trimming_thread() -> None:
    _, _, threads = _run("malloc.tune_malloc(0.05); malloc.tune_malloc(0.05)")
    assert threads == 1


# Large blocks after a larger one was freed: glibc's default would raise its mmap threshold to
# 4 MiB and put them in the arena; with tune_malloc they keep pages of their own.
LARGE = textwrap.dedent(
    """
    import ctypes

    from ingest import malloc

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    MODE
    big = bytearray(4 << 20)
    del big
    blocks = [bytearray(300 << 10) for _ in range(200)]
    print(libc.mallinfo2().hblks)
    """
)


def _mapped_blocks(mode: str) -> int:
    code = LARGE.replace("MODE", mode)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return int(out.stdout)


def test_large_blocks_keep_pages_of_their_own_after_a_larger_one_is_freed() -> None:
    assert _mapped_blocks("malloc.tune_malloc(3600)") >= 200
    assert _mapped_blocks("pass") < 50  # what glibc does by itself: the threshold rose
