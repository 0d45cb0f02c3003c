"""The import layers (STYLE.md §1) hold: `lint-imports` keeps the contracts in pyproject.toml.

The planner imports nothing of kube, metrics, the operator, the simulator or the CLI; the simulator
nothing of kube or the operator; the API schema nothing of the rest. Run as part of the suite, so the
README's test command (and CI) enforces them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tokenscale

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # Analyse the tokenscale these tests import (a worktree's, not whatever is installed editable).
    source_root = Path(tokenscale.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source_root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(lint_imports), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " kept, 0 broken" in done.stdout, done.stdout  # contracts were read, and none broke
