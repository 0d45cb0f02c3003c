"""The release workflow (.github/workflows/release.yaml), linted by actionlint and read for what matters.

No workflow runs here: actionlint checks syntax, expressions, action inputs and shell quoting; the
tests below check that a tag publishes the image the chart defaults to (repository and appVersion),
for two architectures, and packages the chart, and that a tag not matching the versions publishes
nothing (the version check, run here with bash on a copy of the repository's files).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, ROOT
from .test_dockerfile import lint_tool

WORKFLOW = ROOT / ".github" / "workflows" / "release.yaml"


def _workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_actionlint_passes() -> None:
    result = subprocess.run([str(lint_tool("actionlint")), str(WORKFLOW)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_tag_publishes_the_image_the_chart_defaults_to_for_two_architectures() -> None:
    workflow = _workflow()
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # PyYAML reads the key `on` as True
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert workflow["env"]["IMAGE"] == values["image"]["repository"]
    assert values["image"]["tag"] == ""  # the chart's appVersion, which the version check ties to the tag
    assert set(workflow["env"]["PLATFORMS"].split(",")) == {"linux/amd64", "linux/arm64"}
    (push,) = [s for s in workflow["jobs"]["image"]["steps"] if s.get("uses", "").startswith("docker/build-push")]
    assert push["with"]["push"] is True
    assert push["with"]["tags"] == "${{ env.IMAGE }}:${{ needs.versions.outputs.version }}"
    assert push["with"]["platforms"] == "${{ env.PLATFORMS }}"
    chart_steps = " ".join(s.get("run", "") for s in workflow["jobs"]["chart"]["steps"])
    assert "helm package charts/tokenscale" in chart_steps and "helm push" in chart_steps


def _version_check(tag: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (step,) = [s for s in _workflow()["jobs"]["versions"]["steps"] if s.get("id") == "check"]
    (tmp_path / "charts" / "tokenscale").mkdir(parents=True)
    (tmp_path / "charts" / "tokenscale" / "Chart.yaml").write_text((CHART / "Chart.yaml").read_text())
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    output = tmp_path / "github_output"
    env = {**os.environ, "TAG": tag, "GITHUB_OUTPUT": str(output)}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("tag", "ok"),
    [
        pytest.param("v" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"], True, id="matching"),
        pytest.param("v9.9.9", False, id="not-the-chart-version"),
    ],
)
def test_the_tag_must_name_the_chart_and_package_version(tag: str, ok: bool, tmp_path: Path) -> None:
    result = _version_check(tag, tmp_path)
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    if ok:
        assert (tmp_path / "github_output").read_text() == f"version={tag[1:]}\n"
    else:
        assert f"::error::tag {tag} does not match" in result.stdout
