"""The vLLM preset, read through a real Prometheus scraping a real vLLM under load, sees the load the
client sent; and `tokenscale plan --prometheus` plans from it.

A load generator (tests/harness/engine.py) replays Poisson arrivals with lognormal prompt lengths
into the engine for `LOAD_S` seconds; Prometheus scrapes it every second as job `vllm`. Partway
through, the operator's reader (`metrics.observe`) reads the aggregated example's pool over a
`WINDOW_S` window, and the reading is compared with what the client saw in the same wall-clock
window. Tolerances, and why:
- request rate within 10%: `increase()` extrapolates to the window's edges, and a scrape is 1 s;
- mean ISL within 5%: the prompt-length histogram's exact sum over the requests that finished in
  the window, against the client's prompts finished in the window (edges differ by a scrape);
- p90 TTFT within the width of the histogram bucket holding the client's p90 (plus 10%):
  `histogram_quantile` interpolates inside a bucket. The client's TTFT also holds what the engine's
  histogram does not (the HTTP round trip, the API server, the client's own threads on a busy
  2-core machine: 20–30 ms here), so the client's p90 is first shifted by the difference of the
  two means (the histogram's mean is exact: `_sum` / `_count`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from harness.engine import Replayed, VllmServer, replay
from harness.prometheus import Prometheus, PrometheusFactory, bucket_width, static_scrape_config

from tokenscale import api, manifests
from tokenscale.metrics import observe
from tokenscale.metrics.prometheus import PrometheusClient
from tokenscale.planner.observation import Observation
from tokenscale.sim.histogram import TTFT_BUCKETS_S

REPO = Path(__file__).resolve().parents[2]
RATE_PER_S = 3.0
LOAD_S = 75.0
WINDOW_S = 45.0
READ_AT_S = 65.0  # into the load: the window [20 s, 65 s] is all steady load


def _spec_doc(url: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples/vllm-aggregated-8b.yaml").read_text().split("\n---\n")[0])
    doc["spec"]["metrics"] = {"prometheus": {"url": url}, "engine": "vllm", "window": f"{WINDOW_S:g}s"}
    doc["spec"]["pools"]["aggregated"]["metricsLabels"] = {"job": "vllm"}
    return doc


@dataclass(frozen=True)
class Reading:
    observation: Observation
    ttft_mean_s: float  # the engine's own mean TTFT over the window (histogram sum / count)
    replayed: Replayed
    window: tuple[float, float]  # seconds since the load started
    prometheus: Prometheus


@pytest.fixture(scope="module")
def reading(vllm_engine: VllmServer, prometheus_factory: PrometheusFactory) -> Iterator[Reading]:
    prom = prometheus_factory.start(scrape_configs=[static_scrape_config("vllm", [vllm_engine.target])])
    try:
        prom.wait_for_series('up{job="vllm"} == 1')
        rng = np.random.default_rng(11)
        n = int(RATE_PER_S * LOAD_S)
        arrivals = np.cumsum(rng.exponential(1.0 / RATE_PER_S, n))
        arrivals = arrivals[arrivals < LOAD_S]
        isl = np.clip(rng.lognormal(np.log(250.0), 0.8, arrivals.size), 16, 3000).astype(int)
        osl = rng.integers(8, 48, arrivals.size)
        out: list[Replayed] = []
        started = time.time()
        load = threading.Thread(target=lambda: out.append(replay(vllm_engine, arrivals, isl, osl, seed=5)))
        load.start()
        time.sleep(max(started + READ_AT_S - time.time(), 0.0))
        spec = api.InferencePool.model_validate(_spec_doc(prom.url)).spec
        client = PrometheusClient(prom.url, timeout_s=10.0)
        try:
            read_at = time.time()
            observation = asyncio.run(observe.observe(spec, client, read_at)).observation
        finally:
            client.close()
        h, w = "vllm:time_to_first_token_seconds", f"{WINDOW_S:g}s"
        mean = prom.query(f'sum(increase({h}_sum{{job="vllm"}}[{w}])) / sum(increase({h}_count{{job="vllm"}}[{w}]))')
        load.join(timeout=600)
        assert out, "the load generator did not finish"
        end = read_at - started
        yield Reading(observation, float(mean[0]["value"][1]), out[0], (end - WINDOW_S, end), prom)
    finally:
        prom.stop()


def test_the_reading_is_the_load_the_client_sent(reading: Reading) -> None:
    obs, r = reading.observation, reading.replayed
    start, end = reading.window
    sent = (r.sent_s >= start) & (r.sent_s < end)
    finished = (r.end_s >= start) & (r.end_s < end)
    first = (r.first_token_s >= start) & (r.first_token_s < end)
    rate = sent.sum() / (end - start)
    isl_mean = float(r.prompt_tokens[finished].mean())
    overhead = float(r.ttft_s[first].mean()) - reading.ttft_mean_s
    ttft_p90 = float(np.quantile(r.ttft_s[first], 0.9)) - overhead
    assert obs.request_rate_per_s is not None and obs.isl_mean_tokens is not None
    assert obs.ttft_quantile_s is not None
    print(
        f"\nengine vs client over {start:.0f}–{end:.0f} s: rate {obs.request_rate_per_s:.3f} vs {rate:.3f} req/s, "
        f"ISL {obs.isl_mean_tokens:.1f} vs {isl_mean:.1f}, p90 TTFT {obs.ttft_quantile_s:.4f} vs {ttft_p90:.4f} s "
        f"(client overhead {overhead * 1000:.1f} ms), "
        f"p90 ITL {obs.tpot_quantile_s}"
    )
    assert obs.request_rate_per_s == pytest.approx(rate, rel=0.10)
    assert obs.isl_mean_tokens == pytest.approx(isl_mean, rel=0.05)
    assert abs(obs.ttft_quantile_s - ttft_p90) <= 1.1 * bucket_width(TTFT_BUCKETS_S, ttft_p90)
    assert obs.tpot_quantile_s is not None and obs.kv_usage_fraction is not None
    assert [n for n in obs.notes if n.unavailable] == []


def test_plan_over_prometheus_reads_the_engine_and_decides(reading: Reading, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(yaml.safe_dump(_spec_doc(reading.prometheus.url)))
    run = subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "plan", "-f", str(manifest), "--prometheus", reading.prometheus.url,
         "--replicas", "aggregated=1", "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["held"] is False
    recorded = manifests.RecordedObservation.model_validate(printed["observation"])
    assert recorded.request_rate_per_second is not None and recorded.request_rate_per_second > 0
    assert printed["aggregated"]["current_replicas"] == 1
