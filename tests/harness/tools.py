"""kubectl and Helm as the tests run them: a fixed binary, an explicit kubeconfig, private state dirs.

`Kubectl` always passes `--kubeconfig` and a `--cache-dir` in the session's temp dir (so nothing is
read from or written to ~/.kube); `Helm` sets HELM_CACHE_HOME / HELM_CONFIG_HOME / HELM_DATA_HOME to a
temp dir. A failing command raises `CommandFailed` with its arguments, exit status and output, so a
test's failure message shows what the tool said. The `kubectl` and `helm` fixtures build these.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


class CommandFailed(AssertionError):
    """A kubectl or helm command exited non-zero (an AssertionError, so pytest reports a failure)."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"{' '.join(map(str, result.args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def _run(
    argv: list[str], *, stdin: str | None, check: bool, timeout_s: float, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, env=env)
    if check and result.returncode != 0:
        raise CommandFailed(result)
    return result


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one cluster's kubeconfig."""

    binary: Path
    kubeconfig: Path
    cache_dir: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]
        return _run(argv, stdin=stdin, check=check, timeout_s=timeout_s, env=None)


@dataclass(frozen=True)
class Helm:
    """Helm with its cache, config and data homes in `home` (nothing shared with the user's Helm)."""

    binary: Path
    home: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def run(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout_s: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm; pass `kubeconfig` for commands that talk to a cluster (install, upgrade, ...)."""
        argv = [str(self.binary), *([f"--kubeconfig={kubeconfig}"] if kubeconfig else []), *args]
        return _run(argv, stdin=stdin, check=check, timeout_s=timeout_s, env=self.env())
