"""The `tokenscale` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest sets 80; tables here are unwrapped
    return subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env
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


# --- every input checked (issue 13): one line naming the file or flag, exit 2, no traceback ------

EXAMPLE = str(ROOT / "examples" / "vllm-disaggregated-70b.yaml")
TWO_REQUESTS = "t_s,isl,osl\n0.0,100,10\n1.0,100,10\n"


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command (asserting the exit code and no traceback)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("trace", "args", "message"),
    [
        pytest.param(TWO_REQUESTS, ["--rate-scale", "1e308"], "--rate-scale: 1e+308 × 2 requests would replay",
                     id="rate-scale-huge"),
        pytest.param(TWO_REQUESTS, ["--rate-scale", "nan"], "--rate-scale: must be a finite number > 0",
                     id="rate-scale-nan"),
        pytest.param(TWO_REQUESTS, ["--rate-scale", "0"], "--rate-scale: must be a finite number > 0, got 0",
                     id="rate-scale-zero"),
        pytest.param(TWO_REQUESTS, ["--rate-scale", "fast"], "argument --rate-scale: invalid float value",
                     id="rate-scale-not-a-number"),
        pytest.param(TWO_REQUESTS, ["--perf-error", "-2"], "--perf-error: must be a finite number in [-0.9, 9]",
                     id="perf-error-nonsense"),
        pytest.param(TWO_REQUESTS, ["--speedup", "inf"], "--speedup: must be a finite number", id="speedup-inf"),
        pytest.param(TWO_REQUESTS, ["--cold-start", "5"], "--cold-start: '5' is not a duration", id="cold-start"),
        pytest.param(TWO_REQUESTS, ["--seed", "-1"], "--seed: must be ≥ 0", id="negative-seed"),
        pytest.param(TWO_REQUESTS, ["--serve-metrics", "70000", "--rate", "1"],
                     "--serve-metrics: a TCP port is 0-65535, got 70000", id="port-too-large"),
        pytest.param(TWO_REQUESTS, ["--serve-metrics", "0", "--rate", "inf"], "--rate: must be a finite number",
                     id="serve-rate-inf"),
        pytest.param("t_s,isl,osl\n0.0,100,10\n", [], "trace.csv: 1 request(s) over 0 s", id="one-request"),
        pytest.param("t_s,isl,osl\n", [], "trace.csv: no requests", id="empty-trace"),
        pytest.param(TWO_REQUESTS, ["--rate-scale", "0.0001"], "--rate-scale: 0.0001 leaves 0 request(s)",
                     id="thinned-to-nothing"),
    ],
)  # fmt: skip
def test_simulate_refuses_bad_flags_before_the_run(tmp_path: Path, trace: str, args: list[str], message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(trace)
    out = tmp_path / "out"
    result = run("simulate", "-f", EXAMPLE, "--trace", str(path), "--out", str(out), *args)
    assert message in one_line_error(result)
    assert not out.exists(), "a refused run leaves no output directory behind"


def test_simulate_refuses_an_out_that_is_a_file_before_the_run(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TWO_REQUESTS)
    taken = tmp_path / "taken"
    taken.write_text("mine")
    result = run("simulate", "-f", EXAMPLE, "--trace", str(trace), "--out", str(taken))
    assert one_line_error(result) == f"error: --out-dir: {taken} exists and is not a directory"
    assert taken.read_text() == "mine"
    assert "simulat" not in result.stdout  # refused before any policy ran


def test_simulate_refuses_an_unwritable_out_and_removes_what_it_created(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TWO_REQUESTS)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("simulate", "-f", EXAMPLE, "--trace", str(trace), "--out", str(blocker / "sub" / "out"))
    assert one_line_error(result).startswith(f"error: --out-dir: cannot write to {blocker}/sub/out:")
    ro = tmp_path / "ro"
    ro.mkdir()
    result = run("simulate", "-f", EXAMPLE, "--trace", str(trace), "--out", "/proc/tokenscale/out")
    assert one_line_error(result).startswith("error: --out-dir: cannot write to /proc/tokenscale/out:")


def test_serve_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("simulate", "-f", EXAMPLE, "--serve-metrics", str(port), "--rate", "1")
    line = one_line_error(result)
    assert line.startswith(f"error: --serve-metrics: cannot listen on 127.0.0.1:{port}:"), line
    assert "in use" in line


def test_run_without_credentials_is_one_line_not_a_retry_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "run", "--health-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env=env,
    )  # fmt: skip
    line = one_line_error(result)
    assert "no Kubernetes credentials" in line and "~/.kube/config" in line
    (tmp_path / "kubeconfig").write_text("clusters: [\n")
    env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    result = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "run"], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env
    )
    assert str(tmp_path / "kubeconfig") in one_line_error(result)


def test_run_refuses_a_port_out_of_range() -> None:
    assert "--health-port: a TCP port is 0-65535" in one_line_error(run("run", "--health-port", "99999"))


def pool_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = Path(EXAMPLE).read_text()
    assert old in text
    path = tmp_path / "pool.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        pytest.param("gpu: H100", "gpu: H900", "H900", "pools.prefill: unknown GPU 'H900'", id="unknown-gpu"),
        pytest.param("preset: Llama-3.1-70B", "preset: Llama-9-900B", "Llama-9-900B",
                     "spec.modelShape.preset: unknown model preset 'Llama-9-900B'", id="unknown-preset"),
        pytest.param("  name: llama-70b\n", "  labels: {a: b}\n", "metadata:", "metadata.name is required",
                     id="no-name"),
        pytest.param("  mode: Disaggregated\n", "  mode: Disaggregated\n  mode: Aggregated\n", "mode: Aggregated",
                     "not valid YAML: duplicate key 'mode'", id="duplicate-key"),
        pytest.param("      minReplicas: 2\n", "      minReplicas: 2\n      minReplicas: 3\n", "minReplicas: 3",
                     "duplicate key 'minReplicas'", id="duplicate-nested-key"),
        pytest.param("maxReplicas: 16", "maxReplicas: -16", "maxReplicas: -16", "maxReplicas", id="field-line"),
        pytest.param("maxReplicas: 16", "maxReplicas: 100000000000000000000", "maxReplicas: 1000",
                     "spec.pools.decode.maxReplicas: Input should be less than or equal to 10000", id="absurd-max"),
    ],
)  # fmt: skip
def test_validate_runs_what_the_operator_runs(tmp_path: Path, old: str, new: str, needle: str, message: str) -> None:
    path = pool_variant(tmp_path, old, new)
    for command in (["validate", "-f", str(path)], ["plan", "-f", str(path), "--observation", str(path)]):
        line = one_line_error(run(*command))
        assert line.startswith(f"error: {path}:{line_of(path, needle)}:"), line
        assert message in line, line


def test_a_binary_manifest_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_bytes(b"apiVersion: v1\n\x00\xff\xfe\xd0binary")
    for command in ("validate", "plan", "simulate"):
        line = one_line_error(run(command, "-f", str(path)))
        assert line.startswith(f"error: {path}:2: not a UTF-8 text file"), line


def test_huge_observation_values_are_implausible_data_without_warnings(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("requestRatePerSecond: 12", "requestRatePerSecond: 1e300"))
    result = run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = json.loads(result.stdout)
    assert out["held"] is True and out["prefill"]["replicas"] == 1 and out["decode"]["replicas"] == 2
    assert "requestRatePerSecond 1e+300 is above 1e+06" in out["reason"]


def test_a_queue_read_per_pool_drains_and_an_implausible_one_is_a_note_not_a_scale_up(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("prefill: {current: 1}", "prefill: {current: 3}"))
    calm = json.loads(run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json").stdout)
    obs.write_text(obs.read_text() + "waitingRequests: {prefill: 2000, decode: 0}\n")
    drained = json.loads(run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json").stdout)
    assert drained["prefill"]["binding"] == "backlog" and "2000 requests queued" in drained["prefill"]["message"]
    assert drained["prefill"]["replicas"] > calm["prefill"]["replicas"]
    obs.write_text(obs.read_text().replace("prefill: 2000", "prefill: 1e300"))
    result = run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    garbage = json.loads(result.stdout)
    assert garbage["prefill"]["replicas"] == calm["prefill"]["replicas"]
    assert garbage["prefill"]["binding"] != "backlog"


def test_an_infinite_rate_is_implausible_not_no_samples(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("requestRatePerSecond: 12", "requestRatePerSecond: .inf"))
    out = json.loads(run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json").stdout)
    assert out["held"] is True and "no samples" not in out["reason"]
    assert "requestRatePerSecond inf is not a finite non-negative number" in out["reason"]
    obs.write_text(OBSERVATION + "arrivalCv2: .inf\n")
    assert "arrivalCv2 must be a finite number" in one_line_error(run("plan", "-f", EXAMPLE, "--observation", str(obs)))


def test_a_zero_rate_scale_down_respects_min_replicas_in_its_message(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("requestRatePerSecond: 12", "requestRatePerSecond: 0").replace(
        "decode: {current: 2}", "decode: {current: 5}"))  # fmt: skip
    out = json.loads(run("plan", "-f", EXAMPLE, "--observation", str(obs), "-o", "json").stdout)
    assert "scale-down to 2 waits" in out["decode"]["message"]  # decode minReplicas is 2
    assert "scale-down to 1" not in out["decode"]["message"]


@pytest.mark.parametrize("output", ["table", "json"])
def test_plan_with_prometheus_unreachable_fails_once_with_exit_3(output: str) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = run("plan", "-f", EXAMPLE, "--prometheus", url, "-o", output)
    line = one_line_error(result, code=3)
    assert line.startswith(f"error: --prometheus: cannot read {url}: cannot connect"), line
    assert result.stdout == "", "no decision, and no minimum shown as the current replicas"
    assert "3 --prometheus answered no query" in " ".join(run("plan", "--help").stdout.split())


def test_plan_with_an_html_error_page_for_prometheus_exits_3_after_the_held_decision() -> None:
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
            self.send_response(502)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run("plan", "-f", EXAMPLE, "--prometheus", url, "--replicas", "prefill=3,decode=5")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    line = one_line_error(result, code=3)
    assert line.startswith(f"error: --prometheus: cannot read {url}:") and "HTTP 502" in line, line
    assert "<h1>502 Bad Gateway</h1> </body>" in line  # the page on one line
    assert "MetricsMissing" in result.stdout and re.search(r"^prefill\s+3\s", result.stdout, re.M), result.stdout
    assert result.stdout.count("502 Bad Gateway") == 1, "the failure said once"


def test_a_bad_observation_field_names_its_line(tmp_path: Path) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION.replace("oslMeanTokens: 300", "oslMeanTokens: lots"))
    line = one_line_error(run("plan", "-f", EXAMPLE, "--observation", str(obs)))
    assert line.startswith(f"error: {obs}:3: oslMeanTokens:"), line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--prometheus", "notaurl"], "--prometheus: 'notaurl' is not an http:// or https:// URL",
                     id="no-scheme"),
        pytest.param(["--prometheus", "http://[::1"], "--prometheus: 'http://[::1' is not a URL", id="broken-ipv6"),
        pytest.param(["--prometheus", "http://h:99999"], "is not a URL: Port out of range", id="port-out-of-range"),
        pytest.param(["--prometheus", "http://h:9090", "--bearer-token-file", "/nonexistent/token"],
                     "--bearer-token-file: cannot read /nonexistent/token", id="token-file-missing"),
    ],
)  # fmt: skip
def test_plan_refuses_a_bad_prometheus_flag_in_one_line(args: list[str], message: str) -> None:
    assert message in one_line_error(run("plan", "-f", EXAMPLE, *args))


def test_run_refuses_a_port_in_use_before_starting() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("run", "--health-port", "0", "--metrics-port", str(port))
    assert one_line_error(result) == f"error: --metrics-port: cannot listen on port {port}: Address already in use"
