"""`tokenscale fit points.csv`: coefficients recovered from measured points, a profile pools can use, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tokenscale import cli
from tokenscale.api import PerformanceProfile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vllm-disaggregated-70b.yaml"
HEADER = "phase,isl_tokens,batch,context_tokens,seconds\n"
# Llama-3.1-70B on 4×H100-like figures: s(ISL) = a + b·ISL + c·ISL², τ(n, L) = α + β·n + γ·n·L.
PREFILL = (0.015, 1.2e-4, 4e-9)
DECODE = (0.012, 3.5e-5, 4e-8)


def points_csv(rng: np.random.Generator, noise: float, prefill: bool = True, decode: bool = True) -> str:
    """Measured points from the known coefficients, each time multiplied by 1 + N(0, noise²)."""
    rows = [HEADER]
    if prefill:
        a, b, c = PREFILL
        for isl in (64, 128, 256, 512, 1024, 2048, 3072, 4096, 6144, 8192):
            for _ in range(3):
                s = (a + b * isl + c * isl * isl) * (1.0 + noise * rng.standard_normal())
                rows.append(f"prefill,{isl},,,{s:.10g}\n")
    if decode:
        alpha, beta, gamma = DECODE
        for n in (1, 4, 16, 32, 64, 128, 256):
            for ctx in (256, 1000, 3000, 8000):
                s = (alpha + beta * n + gamma * n * ctx) * (1.0 + noise * rng.standard_normal())
                rows.append(f"decode,,{n},{ctx},{s:.10g}\n")
    return "".join(rows)


def run_fit(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, *args: str) -> tuple[int, str, Any]:
    """Run `tokenscale fit` in-process on `content`: (exit status, stderr, the YAML written to a file)."""
    points = tmp_path / "points.csv"
    points.write_text(content)
    out = tmp_path / "profile.yaml"
    code = cli.main(["fit", str(points), "--output-file", str(out), *args])
    stderr = capsys.readouterr().err
    return code, stderr, yaml.safe_load(out.read_text()) if code == 0 else None


@pytest.mark.parametrize(
    ("noise", "coefficient_rel", "prediction_rel"),
    [
        pytest.param(0.0, 1e-5, 1e-5, id="exact-points"),  # only the 6 significant digits written
        # Unweighted least squares: the short prompts' times carry the largest relative error.
        pytest.param(0.01, 0.3, 0.08, id="1pct-noise"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_coefficients(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    noise: float,
    coefficient_rel: float,
    prediction_rel: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    code, stderr, written = run_fit(capsys, tmp_path, points_csv(rng, noise), "--kv-capacity-tokens", "400000")
    assert code == 0, stderr
    profile = PerformanceProfile.model_validate(written)
    assert profile.prefill is not None and profile.prefill is not None and profile.decode is not None
    p, d = profile.prefill, profile.decode
    assert (p.a_seconds, p.b_seconds_per_token, p.c_seconds_per_token2) == pytest.approx(PREFILL, rel=coefficient_rel)
    assert (d.alpha_seconds, d.beta_seconds, d.gamma_seconds_per_token) == pytest.approx(DECODE, rel=coefficient_rel)
    # What the planner uses is the predicted time over the measured range.
    isl = np.array([128.0, 1024.0, 8192.0])
    got = p.a_seconds + p.b_seconds_per_token * isl + p.c_seconds_per_token2 * isl**2
    np.testing.assert_allclose(got, PREFILL[0] + PREFILL[1] * isl + PREFILL[2] * isl**2, rtol=prediction_rel)
    n, ctx = np.array([4.0, 64.0, 256.0]), np.array([3000.0, 1000.0, 8000.0])
    got = d.alpha_seconds + d.beta_seconds * n + d.gamma_seconds_per_token * n * ctx
    np.testing.assert_allclose(got, DECODE[0] + DECODE[1] * n + DECODE[2] * n * ctx, rtol=prediction_rel)
    assert profile.kv_capacity_tokens == 400000
    lines = stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["prefill", "decode"]
    assert "30 points" in lines[0] and "28 points" in lines[1]
    assert all("R² " in line and "max relative error" in line for line in lines)


@pytest.mark.parametrize(
    ("prefill", "decode", "present"),
    [
        pytest.param(True, False, {"prefill"}, id="prefill-only"),
        pytest.param(False, True, {"decode"}, id="decode-only"),
    ],
)
def test_fit_of_one_phase_writes_only_that_phase(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, prefill: bool, decode: bool, present: set[str]
) -> None:
    content = points_csv(np.random.default_rng(0), 0.01, prefill=prefill, decode=decode)
    code, stderr, written = run_fit(capsys, tmp_path, content)
    assert code == 0, stderr
    assert set(written) == present
    PerformanceProfile.model_validate(written)


def test_fit_writes_a_configmap_holding_the_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stderr, manifest = run_fit(
        capsys, tmp_path, points_csv(np.random.default_rng(0), 0.0), "--configmap", "llama-70b-profile"
    )
    assert code == 0, stderr
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("ConfigMap", "llama-70b-profile")
    profile = PerformanceProfile.model_validate(yaml.safe_load(manifest["data"]["profile.yaml"]))
    assert profile.decode is not None and profile.decode.alpha_seconds == pytest.approx(DECODE[0], rel=1e-5)


def test_fit_prints_to_stdout_without_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    points = tmp_path / "points.csv"
    points.write_text(points_csv(np.random.default_rng(0), 0.0))
    assert cli.main(["fit", str(points)]) == 0
    out = capsys.readouterr().out
    assert PerformanceProfile.model_validate(yaml.safe_load(out)).prefill is not None


def pool_with_profile(tmp_path: Path, profile: dict[str, Any], name: str) -> Path:
    """The disaggregated example with `profile` inline under both pools' performance."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc.get("kind") == "InferencePool":
            for role in ("prefill", "decode"):
                doc["spec"]["pools"][role]["performance"] = {"profile": profile, "onlineCalibration": False}
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


OBSERVATION = """\
requestRatePerSecond: 20
islMeanTokens: 2000
oslMeanTokens: 300
replicas:
  prefill: {current: 2}
  decode: {current: 2}
"""


def plan_json(capsys: pytest.CaptureFixture[str], pool: Path, observation: Path) -> dict[str, Any]:
    assert cli.main(["validate", "-f", str(pool)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    code = cli.main(["plan", "-f", str(pool), "--observation", str(observation), "-o", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out: dict[str, Any] = json.loads(captured.out)
    return out


def test_fitted_profile_plugs_into_an_example_pool_and_plans(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, stderr, fitted = run_fit(capsys, tmp_path, points_csv(np.random.default_rng(0), 0.01))
    assert code == 0, stderr
    observation = tmp_path / "obs.yaml"
    observation.write_text(OBSERVATION)
    plan = plan_json(capsys, pool_with_profile(tmp_path, fitted, "fitted.yaml"), observation)
    assert plan["prefill"]["replicas"] >= 1 and plan["decode"]["replicas"] >= 1
    # The profile is what the planner sizes with: a decode three times slower needs more replicas.
    slower = {**fitted, "decode": {k: 3.0 * v for k, v in fitted["decode"].items()}}
    slow_plan = plan_json(capsys, pool_with_profile(tmp_path, slower, "slower.yaml"), observation)
    assert slow_plan["decode"]["replicas"] > plan["decode"]["replicas"]


PREFILL_ROWS = "prefill,128,,,0.03\nprefill,1024,,,0.15\nprefill,4096,,,0.6\n"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param("isl_tokens,seconds\n128,0.03\n", [], "missing column phase", id="no-phase-column"),
        pytest.param("phase,isl_tokens,seconds\ndecode,,0.02\n", [], "missing column batch", id="decode-without-batch"),
        pytest.param(HEADER + "prefill,128,,,0.03\nprefill,1024,,,0.15\n", [], "at least 3 points", id="2-points"),
        pytest.param(
            HEADER + "prefill,-128,,,0.03\n" + PREFILL_ROWS, [], "points.csv:2: isl_tokens", id="negative-isl"
        ),
        pytest.param(HEADER + PREFILL_ROWS + "prefill,512,,,-0.1\n", [], "points.csv:5: seconds", id="negative-time"),
        pytest.param(HEADER + PREFILL_ROWS + "prefill,512,,,0\n", [], "seconds must be > 0", id="zero-time"),
        pytest.param(HEADER + "prefill,lots,,,0.03\n", [], "isl_tokens 'lots' is not a number", id="not-a-number"),
        pytest.param(HEADER + "prefill,128\n", [], "seconds is empty", id="short-row"),
        pytest.param(HEADER + "warmup,128,,,0.03\n", [], "phase must be prefill or decode", id="unknown-phase"),
        pytest.param(HEADER + "decode,,0,100,0.01\n", [], "batch must be ≥ 1", id="empty-batch"),
        pytest.param(
            HEADER + "prefill,128,,,0.6\nprefill,1024,,,0.3\nprefill,4096,,,0.1\n",
            [],
            "does not grow with prompt length",
            id="prefill-faster-for-longer-prompts",
        ),
        pytest.param(
            HEADER + "decode,,1,1000,0.01\ndecode,,8,1000,0.02\ndecode,,64,1000,0.05\n",
            [],
            "context lengths that vary independently",
            id="decode-one-context",
        ),
        pytest.param("", [], "no points", id="empty-file"),
        pytest.param(HEADER, [], "no points", id="header-only"),
        pytest.param(HEADER + PREFILL_ROWS, ["--kv-capacity-tokens", "0"], "--kv-capacity-tokens", id="kv-zero"),
    ],
)
def test_fit_rejects_bad_input_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    code, stderr, _ = run_fit(capsys, tmp_path, content, *args)
    assert code == cli.EXIT_INVALID
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "profile.yaml").exists()


def test_fit_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["fit", str(tmp_path / "nope.csv")]) == cli.EXIT_INVALID
    stderr = capsys.readouterr().err
    assert stderr == f"error: {tmp_path / 'nope.csv'}: cannot read: No such file or directory\n"
