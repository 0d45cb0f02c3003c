"""Child processes of the test session: start with a log file, stop by PID, and find leftovers.

cluster.py and prometheus.py start etcd, kube-apiserver, kube-controller-manager and Prometheus
through a `Supervisor`, which remembers what it started and stops it in reverse order. tests/conftest.py
uses `descendant_pids` to fail any test that leaves a child process behind (STYLE.md rule 31).
Every process is stopped by its own PID, never by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook giving the child SIGKILL when the test session dies, so nothing outlives a crash.

    libc is resolved here, in the parent: the child, forked from a process that may run threads,
    only makes the prctl system call.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_parent_death_signal


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    """One started process: its name for messages, its command line, its log file, and its handle."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL after `grace_s` seconds; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=30)

    def kill(self) -> int:
        """SIGKILL at once (a crash, for fault tests; or the apiserver, whose SIGTERM drains for 61 s)."""
        if self.alive():
            self.popen.kill()
        return self.popen.wait(timeout=30)

    def log_tail(self, max_lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"({self.log_path} does not exist)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-max_lines:])

    def describe(self, max_lines: int = 40) -> str:
        """A paragraph for error messages: status, log path and the end of the log."""
        status = "running" if self.alive() else f"exited with status {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}) {status}; log {self.log_path}:\n{self.log_tail(max_lines)}"


class Supervisor:
    """Starts processes and stops every one it started, newest first."""

    def __init__(self) -> None:
        self._processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start `argv` with stdout and stderr appended to `log_path`, in its own session.

        The child is killed if the thread that started it exits (Linux's parent-death signal), so
        start processes from the test's main thread, as fixtures do.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        process = ManagedProcess(name=name, argv=tuple(argv), log_path=log_path, popen=popen)
        self._processes.append(process)
        return process

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        """The started processes, oldest first."""
        return tuple(self._processes)

    def pids(self) -> frozenset[int]:
        """PIDs of the started processes still running, and of their descendants (vLLM's engine core)."""
        started = frozenset(p.pid for p in self._processes if p.alive())
        return started.union(*(descendant_pids(pid) for pid in started))

    def stop_all(self, grace_s: float = 5.0) -> None:
        for process in reversed(self._processes):
            process.stop(grace_s)
        self._processes.clear()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None if it has gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def descendant_pids(root_pid: int) -> frozenset[int]:
    """Live (non-zombie) descendants of `root_pid`, found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is None or stat[0] == "Z":
            continue
        children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    pending = [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return frozenset(found)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return "(gone)"
