"""A fixed fleet of the event-driven simulator (`sim.fleet`) replaying a seeded trace: the reference the
decode-side predictions (`planner.tpot`, `sizing.chunked_itl_quantile_s`) are checked against.

The simulator runs continuous batching step by step (aggregated: every step also carries the waiting
prompts' chunks) and shares no code with the planner's formulas. Its inter-token-latency histogram
is kept at 1% resolution (`histogram.FINE_LATENCY_BUCKETS_S` in place of vLLM's buckets), so the
per-token quantile is exact to the bucket, not interpolated across vLLM's 10–25 ms buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from tokenscale import api
from tokenscale.planner import profiles
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.planner.sizing import Load
from tokenscale.sim import loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.histogram import FINE_LATENCY_BUCKETS_S, HistogramSnapshot
from tokenscale.sim.workload import make_workload

REPO = Path(__file__).resolve().parents[2]
DURATION_S = 900.0


@dataclass(frozen=True)
class Replay:
    spec: api.InferencePoolSpec
    performance: dict[api.Role, ReplicaPerformance]
    load: Load  # the trace's own load: rate, length means and c², index of dispersion of 1-s counts
    tpot_s: npt.NDArray[np.float64]  # per request, NaN for one-token answers
    itl_s: HistogramSnapshot  # per token, at FINE_LATENCY_BUCKETS_S


# A replica like tests/sim/test_vs_vllm.py's CPU engine: prompts cost 0.13 ms a token, a decode step
# 3 ms + 0.4 ms a sequence, so one 2,048-token chunk holds up the batch for ~65 steps.
CPU_ENGINE_POOL: dict[str, Any] = {
    "maxBatchSize": 64,
    "maxNumBatchedTokens": 2048,
    "performance": {
        "profile": {
            "prefill": {"aSeconds": 0.01, "bSecondsPerToken": 1.3e-4, "cSecondsPerToken2": 0.0},
            "decode": {"alphaSeconds": 0.003, "betaSeconds": 0.0004, "gammaSecondsPerToken": 0.0},
            "kvCapacityTokens": 1_000_000,
        }
    },
}


def example_spec(example: str, role: api.Role, pool: dict[str, Any] | None = None) -> api.InferencePoolSpec:
    """The example's pool, with `pool`'s fields (if any) set on `role`."""
    doc = yaml.safe_load((REPO / "examples" / example).read_text().split("\n---\n")[0])
    doc["spec"]["pools"][role].update(pool or {})
    return api.InferencePool.model_validate(doc).spec


def trace(rate_per_s: float, burst: int, seed: int, short: bool = False) -> tuple[npt.NDArray[np.float64], ...]:
    """Poisson arrivals (or Poisson groups of `burst` within 50 ms); lognormal prompts ~1,000 and outputs
    ~200, or (`short`) the engine test's: lognormal prompts ~550 (at most 3,000), outputs 16–95."""
    rng = np.random.default_rng(seed)
    if burst > 1:
        starts = np.cumsum(rng.exponential(burst / rate_per_s, int(rate_per_s * DURATION_S / burst)))
        arrivals = np.sort((starts[:, None] + rng.uniform(0, 0.05, (starts.size, burst))).ravel())
    else:
        arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * DURATION_S)))
    arrivals = arrivals[arrivals < DURATION_S]
    if short:
        isl = np.clip(rng.lognormal(np.log(400.0), 0.8, arrivals.size), 16, 3000).astype(np.int64)
        return arrivals, isl, rng.integers(16, 96, arrivals.size).astype(np.int64)
    isl = np.clip(rng.lognormal(np.log(1000.0), 0.9, arrivals.size), 16, 8000).astype(np.int64)
    osl = np.clip(rng.lognormal(np.log(200.0), 0.9, arrivals.size), 2, 2000).astype(np.int64)
    return arrivals, isl, osl


def replay(
    example: str,
    role: api.Role,
    replicas: int,
    rate_per_s: float,
    burst: int = 1,
    cpu_engine: bool = False,
) -> Replay:
    """15 minutes of the trace through `replicas` of `role` (8 of any other pool), no cold start;
    `cpu_engine`: on `CPU_ENGINE_POOL` with the engine test's short requests."""
    spec = example_spec(example, role, CPU_ENGINE_POOL if cpu_engine else None)
    performance = profiles.resolve_all(spec)
    arrivals, isl, osl = trace(rate_per_s, burst, seed=1, short=cpu_engine)
    workload = make_workload("replay", arrivals, isl, osl)
    setup = loop.SimSetup(spec, workload, performance, performance, 0.0)
    counts = {r: replicas if r == role else 8 for r in spec.active_pools()}
    config = replace(loop.fleet_config(setup, counts, cold_start=False), itl_buckets_s=FINE_LATENCY_BUCKETS_S)
    fleet = Fleet(workload, config, np.random.default_rng(0))
    fleet.run_to_completion()
    per_second = np.bincount(arrivals.astype(np.int64))
    load = Load(
        rate_per_s=arrivals.size / DURATION_S,
        isl_mean_tokens=float(isl.mean()),
        osl_mean_tokens=float(osl.mean()),
        isl_cv2=float(isl.var() / isl.mean() ** 2),
        osl_cv2=float(osl.var() / osl.mean() ** 2),
        arrival_cv2=float(per_second.var() / per_second.mean()),
    )
    return Replay(spec, performance, load, fleet.records().tpot_s, fleet.snapshot(fleet.now_s).itl_s)
