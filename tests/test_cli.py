"""The `tokenscale` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    for command in ("crds", "validate", "plan", "simulate"):
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
        pytest.param(
            BROKEN.replace("minReplicas: 4", "minReplicas: 1").replace(
                "model: m", "model: m\n  modelShape: {precision: fp4}"
            ),
            "spec.modelShape.precision: Input should be 'bf16' or 'fp8'",
            id="unknown-precision",
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


OBSERVATION = """\
requestRatePerSecond: 12
islMeanTokens: 2000
oslMeanTokens: 300
replicas:
  prefill: {current: 1}
  decode: {current: 2}
"""


def test_plan_json_has_the_documented_shape(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION)
    result = run("plan", "-f", str(ROOT / "examples" / "vllm-disaggregated-70b.yaml"), "--observation", str(obs),
                 "-o", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["prefill"]) >= {"replicas", "gpus", "predicted", "reason", "message"}
    assert "ttft_s" in out["prefill"]["predicted"] and "tpot_s" in out["decode"]["predicted"]
    assert out["prefill"]["replicas"] > 1 and out["prefill"]["gpus"] == 4 * out["prefill"]["replicas"]
    assert out["reason"].startswith("prefill 1→") and out["held"] is False


def test_plan_table_and_missing_signal(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("requestRatePerSecond: 12\n", ""))
    result = run("plan", "-f", str(ROOT / "examples" / "vllm-disaggregated-70b.yaml"), "--observation", str(obs))
    assert result.returncode == 0, result.stderr
    assert "MetricsMissing" in result.stdout and "request_rate" in result.stdout


def test_plan_rejects_bad_observation(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text("requestRatePerSecond: fast\n")
    result = run("plan", "-f", str(ROOT / "examples" / "vllm-disaggregated-70b.yaml"), "--observation", str(obs))
    assert result.returncode == 2 and "requestRatePerSecond" in result.stderr and "Traceback" not in result.stderr


def test_simulate_writes_summary_report_and_plot(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 600, 3000))
    lines = ["t_s,isl,osl"] + [f"{t:.3f},{int(rng.integers(200, 3000))},{int(rng.integers(20, 400))}" for t in times]
    trace.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run("simulate", "-f", str(ROOT / "examples" / "vllm-disaggregated-70b.yaml"), "--trace", str(trace),
                 "--policy", "tokenscale,static,hpa", "--cold-start", "60s", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["policies"]) == ["tokenscale", "static", "hpa"]
    assert summary["workload"]["requests"] == 3000
    for name, row in summary["policies"].items():
        assert 0.0 <= row["requests_meeting_both"] <= 1.0, name
        assert row["gpu_hours"] > 0
    assert (out / "plot.png").exists() and (out / "report.md").exists()
    assert "tokenscale" in result.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param("t_s,isl,osl\n0.0,100,10\n1.0,-5,10\n", [], ":3:", id="negative-length-names-line"),
        pytest.param("t_s,isl,osl\n0.0,100,10\n", ["--policy", "magic"], "unknown policy magic", id="bad-policy"),
    ],
)
def test_simulate_bad_input_one_line(tmp_path: Path, content: str, args: list[str], message: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    result = run("simulate", "-f", str(ROOT / "examples" / "vllm-disaggregated-70b.yaml"), "--trace", str(trace),
                 "--out", str(tmp_path / "o"), *args)  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
