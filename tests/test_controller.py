"""`controller.limit_malloc_arenas`: threads started after it share at most that many glibc arenas.

Run in a child interpreter each, since the cap is process-wide and only affects arenas made later;
glibc's malloc_info(3) lists one <heap> per arena.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import ctypes, sys, tempfile, threading
from tokenscale.controller import limit_malloc_arenas
if sys.argv[1] == "cap":
    assert limit_malloc_arenas(2)
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


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.strip())


def test_threads_started_after_the_cap_share_at_most_that_many_arenas() -> None:
    assert _arenas("cap") <= 2


def test_without_the_cap_concurrent_threads_get_more_arenas() -> None:
    """The control: the same program without the cap, so the test above can fail."""
    assert _arenas("default") > 2
