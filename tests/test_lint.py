"""ruff (lint and format) and `mypy --strict` hold over the code, run as part of the suite.

So the README's test command, and CI with it, fails on a lint error, an unformatted file or a type
error, as `test_layers.py` fails on a broken import contract. The configuration is pyproject.toml's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHECKED = ["operator", "tests", "bench"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["ruff", "check", "--no-cache", *CHECKED], id="ruff-check"),
        pytest.param(["ruff", "format", "--check", "--no-cache", *CHECKED], id="ruff-format"),
    ],
)
def test_ruff(args: list[str]) -> None:
    done = _run([str(BIN / args[0]), *args[1:]])
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # The files and `strict = true` come from pyproject.toml; a fresh cache keeps the check honest.
    done = _run([str(BIN / "mypy"), "--cache-dir", str(tmp_path / "mypy-cache")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout, done.stdout
