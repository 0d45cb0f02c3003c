"""The `tokenscale` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("crds", "validate"):
        assert command in result.stdout


def test_crds_prints_the_committed_crd() -> None:
    result = run("crds")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_validate_accepts_every_example(path: Path) -> None:
    result = run("validate", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


BROKEN = """\
apiVersion: tokenscale.dev/v1alpha1
kind: InferencePool
metadata: {name: broken}
spec:
  model: m
  mode: Aggregated
  objectives: {ttft: {target: 500ms}, tpot: {target: 50ms}}
  metrics: {prometheus: {url: http://p:9090}}
  pools:
    aggregated: {scaleTargetRef: {name: x}, minReplicas: 4, maxReplicas: 2}
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            BROKEN,
            "spec.pools.aggregated: minReplicas (4) must be less than or equal to maxReplicas (2)",
            id="min-greater-than-max",
        ),
        pytest.param(
            BROKEN.replace("500ms", "500"),
            "spec.objectives.ttft.target: 500 has no unit: write a duration such as '500ms'",
            id="bad-duration",
        ),
        pytest.param(
            BROKEN.replace("maxReplicas: 2", "maxReplicas: 2, gpuPerReplica: 1"),
            "spec.pools.aggregated.gpuPerReplica: unknown field",
            id="misspelt-field",
        ),
        pytest.param("spec: [unclosed", "not valid YAML", id="bad-yaml"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\n", "no tokenscale.dev/v1alpha1 InferencePool", id="no-pool"),
    ],
)
def test_validate_rejects_broken_pool_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(content)
    result = run("validate", "-f", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_validate_missing_file() -> None:
    result = run("validate", "-f", "/nonexistent/pool.yaml")
    assert result.returncode == 2 and "cannot read" in result.stderr and "Traceback" not in result.stderr
