"""Each engine preset, read through a real Prometheus scraping the simulator's exporter, agrees with
the simulated fleet's ground truth; and `tokenscale plan --prometheus` decides what `plan()` decides.

One simulated disaggregated fleet runs at 10× wall-clock speed and is exported twice — with vLLM's
and with SGLang's series — plus a Dynamo frontend. Prometheus scrapes each pool as its own job
(`scrape_interval: 1s`), which is what the pools' `metricsLabels: {job: …}` select. Rates read per
wall second are the simulated rate × speedup; latencies are simulated seconds.

Tolerances, and why:
- request rate within 10%: `increase()` extrapolates to the window's edges and the window's ends in
  wall time are only known to a scrape (1 s = 10 simulated s of a 300 s window);
- mean ISL/OSL within 5%: same requests up to the window edges, exact sums;
- p90 TTFT and ITL within the width of the histogram bucket that holds the true value (plus 10%):
  `histogram_quantile` interpolates linearly inside a bucket, so it can only be that close.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from harness.prometheus import Prometheus, PrometheusFactory, bucket_width, static_scrape_config
from harness.wait import wait_until

from tokenscale import api, manifests, report
from tokenscale.metrics import observe
from tokenscale.metrics.prometheus import PrometheusClient
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation
from tokenscale.planner.sizing import Load
from tokenscale.sim import exporter, loop, policies, workload
from tokenscale.sim.histogram import ITL_BUCKETS_S, TTFT_BUCKETS_S
from tokenscale.sim.truth import Truth

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
SPEEDUP = 10.0
RATE_PER_S = 4.0  # simulated
WINDOW_WALL_S = 30.0
ENGINES = ("vllm", "sglang", "dynamo")


def _spec_doc(engine: str, url: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples/vllm-disaggregated-70b.yaml").read_text().split("\n---\n")[0])
    doc["spec"]["metrics"] = {"prometheus": {"url": url}, "engine": engine, "window": f"{WINDOW_WALL_S:g}s"}
    job = "vllm" if engine == "dynamo" else engine
    doc["spec"]["pools"]["prefill"]["metricsLabels"] = {"job": f"{job}-prefill"}
    doc["spec"]["pools"]["decode"]["metricsLabels"] = {"job": f"{job}-decode"}
    return doc


def _spec(engine: str, url: str) -> api.InferencePoolSpec:
    return api.InferencePool.model_validate(_spec_doc(engine, url)).spec


@dataclass(frozen=True)
class Readings:
    observations: dict[str, Observation]
    truth: Truth
    prometheus: Prometheus
    truth_fleet: exporter.LiveFleet


@pytest.fixture(scope="module")
def readings(prometheus_factory: PrometheusFactory) -> Iterator[Readings]:
    spec = _spec("vllm", "http://unused")
    prior = profiles.resolve_all(spec)
    rng = np.random.default_rng(1)
    load = Load(
        RATE_PER_S,
        float(exporter.DEFAULT_ISL.sample(rng, 20_000).mean()),
        float(exporter.DEFAULT_OSL.sample(rng, 20_000).mean()),
    )
    counts = policies.size_for(spec, load, prior)
    setup = loop.SimSetup(spec, workload.make_workload("live", [], [], []), prior, prior, 0.0)
    config = loop.fleet_config(setup, counts, cold_start=False)
    with (
        exporter.LiveFleet(config, RATE_PER_S, speedup=SPEEDUP, seed=3) as live,
        exporter.MetricsServer(live, model=spec.model, engine="vllm") as vllm_server,
        exporter.MetricsServer(live, model=spec.model, engine="sglang") as sglang_server,
    ):
        v, s = f"127.0.0.1:{vllm_server.port}", f"127.0.0.1:{sglang_server.port}"
        prom = prometheus_factory.start(
            scrape_configs=[
                static_scrape_config("vllm-prefill", [v], metrics_path="/metrics/prefill"),
                static_scrape_config("vllm-decode", [v], metrics_path="/metrics/decode"),
                static_scrape_config("sglang-prefill", [s], metrics_path="/metrics/prefill"),
                static_scrape_config("sglang-decode", [s], metrics_path="/metrics/decode"),
                static_scrape_config("dynamo-frontend", [v], metrics_path="/metrics/frontend"),
            ]
        )
        try:
            prom.wait_for_series('up{job="dynamo-frontend"} == 1')
            time.sleep(WINDOW_WALL_S + 3.0)
            observations = {}
            now = time.time()
            for engine in ENGINES:
                spec_e = _spec(engine, prom.url)
                client = PrometheusClient(prom.url, timeout_s=10.0)
                try:
                    observations[engine] = asyncio.run(observe.observe(spec_e, client, now)).observation
                finally:
                    client.close()
            truth = live.truth(WINDOW_WALL_S * SPEEDUP)
            yield Readings(observations, truth, prom, live)
        finally:
            prom.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_observation_matches_the_simulated_truth(readings: Readings, engine: str) -> None:
    obs, truth = readings.observations[engine], readings.truth
    assert truth.arrival_rate_per_s is not None and truth.isl_mean_tokens is not None
    assert truth.osl_mean_tokens is not None and truth.ttft_p90_s is not None and truth.itl_p90_s is not None
    assert obs.request_rate_per_s is not None
    assert obs.request_rate_per_s / SPEEDUP == pytest.approx(truth.arrival_rate_per_s, rel=0.10)
    assert obs.isl_mean_tokens == pytest.approx(truth.isl_mean_tokens, rel=0.05)
    assert obs.osl_mean_tokens == pytest.approx(truth.osl_mean_tokens, rel=0.05)
    assert truth.tpot_p90_s is not None
    assert obs.ttft_quantile_s is not None and obs.tpot_quantile_s is not None and obs.itl_quantile_s is not None
    assert abs(obs.ttft_quantile_s - truth.ttft_p90_s) <= 1.1 * bucket_width(TTFT_BUCKETS_S, truth.ttft_p90_s)
    assert abs(obs.tpot_quantile_s - truth.tpot_p90_s) <= 1.1 * bucket_width(ITL_BUCKETS_S, truth.tpot_p90_s)
    assert abs(obs.itl_quantile_s - truth.itl_p90_s) <= 1.1 * bucket_width(ITL_BUCKETS_S, truth.itl_p90_s)
    missing = [n for n in obs.notes if n.kind in ("missing", "stale", "nan", "unreachable")]
    if engine == "vllm":
        assert obs.isl_cv2 is not None and obs.osl_cv2 is not None
        assert obs.prefill_time_mean_s is not None and obs.kv_usage_fraction is not None
        assert set(obs.running_requests) == set(obs.waiting_requests) == {"prefill", "decode"}
        assert missing == []
    print(
        f"\n{engine}: rate {obs.request_rate_per_s / SPEEDUP:.3f} vs {truth.arrival_rate_per_s:.3f} req/s, "
        f"ISL {obs.isl_mean_tokens:.1f} vs {truth.isl_mean_tokens:.1f}, OSL {obs.osl_mean_tokens:.1f} vs "
        f"{truth.osl_mean_tokens:.1f}, p90 TTFT {obs.ttft_quantile_s:.4f} vs {truth.ttft_p90_s:.4f} s, "
        f"p90 TPOT {obs.tpot_quantile_s:.4f} vs {truth.tpot_p90_s:.4f} s, p90 ITL {obs.itl_quantile_s:.4f} vs "
        f"{truth.itl_p90_s:.4f} s"
    )


def test_plan_cli_over_prometheus_matches_plan_on_the_same_observation(readings: Readings, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(yaml.safe_dump(_spec_doc("vllm", readings.prometheus.url)))
    run = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "plan", "-f", str(manifest), "--prometheus", readings.prometheus.url,
         "--replicas", "prefill=1,decode=2", "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    recorded = manifests.RecordedObservation.model_validate(printed.pop("observation"))
    notes = printed.pop("data_quality")
    assert recorded.request_rate_per_second is not None and recorded.request_rate_per_second > 0
    assert all(n["kind"] not in ("missing", "stale", "unreachable") for n in notes)
    spec = _spec("vllm", readings.prometheus.url)
    obs = recorded.to_observation()
    decision = plan_mod.plan(spec, obs, plan_mod.PlannerState(), obs.time_s, profiles.resolve_all(spec))
    assert printed == json.loads(json.dumps(report.decision_json(decision)))
    assert printed["decode"]["current_replicas"] == 2 and printed["prefill"]["current_replicas"] == 1
    # The table form prints the observation with its data-quality column, then the decision.
    table = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "plan", "-f", str(manifest), "--prometheus", readings.prometheus.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "request_rate" in table.stdout and "data quality" in table.stdout and "decode" in table.stdout


def test_plan_cli_against_a_stopped_prometheus_holds_and_says_why(tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(yaml.safe_dump(_spec_doc("vllm", "http://127.0.0.1:9")))
    run = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "plan", "-f", str(manifest), "--prometheus", "http://127.0.0.1:9",
         "--replicas", "prefill=3,decode=5", "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # Prometheus could not be read at all: the held decision, the failure once on stderr, exit 3.
    assert run.returncode == 3, run.stderr
    assert run.stderr.strip() == "error: --prometheus: cannot read http://127.0.0.1:9: cannot connect to " \
        "http://127.0.0.1:9: [Errno 111] Connection refused"  # fmt: skip
    printed = json.loads(run.stdout)
    assert printed["held"] is True
    assert (printed["prefill"]["replicas"], printed["decode"]["replicas"]) == (3, 5)
    assert {n["kind"] for n in printed["data_quality"]} == {"unreachable"}
    metrics = next(c for c in printed["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics["status"] == "False" and "cannot connect" in metrics["message"]


def test_simulate_serve_metrics_serves_until_terminated(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenscale.cli", "simulate", "-f", str(REPO / "examples/vllm-aggregated-8b.yaml"),
         "--serve-metrics", "0", "--rate", "3", "--speedup", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        url = lines[1].strip()
        assert url.endswith("/metrics/aggregated"), lines

        def scraped() -> str | None:
            import urllib.request

            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
            return body if 'vllm:request_success_total{engine="0",finished_reason="stop"' in body else None

        body = wait_until(scraped, what="metrics from the serving fleet", timeout_s=30, interval_s=0.5)
        assert 'model_name="meta-llama/Llama-3.1-8B-Instruct"' in body
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
