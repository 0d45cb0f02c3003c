"""What a test left running: child processes, multiprocessing children and non-daemon threads.

The autouse `leak_check` fixture in tests/conftest.py takes a `Snapshot` before each test and asks
it afterwards for `leftovers` (STYLE.md rule 31); the processes it reports are killed by PID, since
they are the test's own descendants. Processes that session fixtures own (the cluster, session
Prometheus servers, an apiserver a test restarted) are passed in as `expected_pids`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Set
from dataclasses import dataclass

from harness.processes import command_line, descendant_pids


@dataclass(frozen=True)
class Snapshot:
    """The process's descendants and threads at one moment."""

    pids: frozenset[int]
    threads: frozenset[threading.Thread]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(pids=descendant_pids(os.getpid()), threads=frozenset(threading.enumerate()))

    def leftovers(self, *, expected_pids: Set[int] = frozenset(), thread_grace_s: float = 5.0) -> list[str]:
        """Describe what was started since the snapshot and still runs, killing the processes.

        New non-daemon threads get `thread_grace_s` (in all) to finish before they count.
        """
        found: list[str] = []
        for pid in sorted(descendant_pids(os.getpid()) - self.pids - expected_pids):
            found.append(f"child process {pid}: {command_line(pid)}")
            try:
                os.kill(pid, signal.SIGKILL)  # our own descendant, started since the snapshot
            except ProcessLookupError:
                pass
        for child in multiprocessing.active_children():
            found.append(f"multiprocessing child {child.name} (pid {child.pid})")
            child.kill()
            child.join(timeout=10)
        deadline = time.monotonic() + thread_grace_s
        new_threads = [t for t in threading.enumerate() if t not in self.threads and not t.daemon]
        for thread in new_threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        found += [f"non-daemon thread {t.name!r} still running" for t in new_threads if t.is_alive()]
        return found
