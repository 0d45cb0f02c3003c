"""`heap`: threads share at most the capped number of glibc arenas, and free heap memory goes back.

Each case runs in a child interpreter, since both settings are process-wide: glibc's malloc_info(3)
lists one <heap> per arena; VmRSS shows what the process keeps.
"""

from __future__ import annotations

import subprocess
import sys

ARENAS = """
import ctypes, sys, tempfile, threading
from tokenscale import heap
if sys.argv[1] == "cap":
    assert heap.limit_arenas(2)
barrier = threading.Barrier(12)
def allocate():
    barrier.wait()  # all at once, so each finds the others' arenas locked
    keep = [bytes(1000) for _ in range(20000)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    stream = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(open(f.name).read().count("<heap nr="))
"""

# 2,000 blocks of 100 KB (below glibc's 128 KB mmap threshold, so on the heap), every 50th kept:
# what is freed lies below live blocks, where glibc does not give it back by itself.
RELEASE = """
import re
from tokenscale import heap
def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
blocks = [bytearray(100_000) for _ in range(2000)]
kept = blocks[::50]
del blocks
freed = rss_mb()
released = heap.release_free()
print(freed, rss_mb(), released)
"""


def _child(program: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_threads_started_after_the_cap_share_at_most_that_many_arenas() -> None:
    assert int(_child(ARENAS, "cap")[0]) <= 2


def test_without_the_cap_concurrent_threads_get_more_arenas() -> None:
    """The control: the same program without the cap, so the test above can fail."""
    assert int(_child(ARENAS, "default")[0]) > 2


def test_freed_memory_below_live_blocks_stays_resident_until_released() -> None:
    freed_mb, released_mb, released = _child(RELEASE)
    assert float(freed_mb) > 150  # the 196 MB freed are still resident: glibc kept them
    assert released == "True"
    assert float(released_mb) < float(freed_mb) - 150
