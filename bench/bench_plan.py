"""Benchmark: plan() latency for one disaggregated pool, and 1,000 pools in one process.

Prints figures; asserts nothing (timings belong here, not in tests). Goal (issue 3): median
≤ 2 ms per pool and 1,000 pools ≤ 2 s on a 2-core machine.

    .venv/bin/python bench/bench_plan.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from tokenscale import manifests
from tokenscale.planner import lengths, profiles
from tokenscale.planner import plan as planner
from tokenscale.planner.observation import LatencyHistogram, Observation, ReplicaCounts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    spec = manifests.load_one_pool(ROOT / "examples" / "vllm-disaggregated-70b.yaml").pool.spec
    perf = profiles.resolve_all(spec)
    rng = np.random.default_rng(0)
    state = planner.PlannerState()
    latencies = []
    # What the operator reads from vLLM's histograms: prompt-length buckets (the planner integrates over
    # their shape) and TTFT buckets (the tail fit inverts the model at the current count every cycle).
    token_bounds = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
    ttft_bounds = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
    counts = {"prefill": 3, "decode": 4}  # the fleet follows the decisions (so the tail fit runs between scales)
    fits = 0
    for i in range(1000):
        prompts = rng.lognormal(np.log(1500.0), 0.8, 2000)
        ttfts = rng.lognormal(np.log(0.2), 0.6, 2000)
        obs = Observation(
            time_s=30.0 * i,
            request_rate_per_s=float(rng.uniform(2, 40)),
            isl_mean_tokens=float(rng.uniform(500, 4000)),
            osl_mean_tokens=float(rng.uniform(100, 600)),
            replicas={r: ReplicaCounts(n, n) for r, n in counts.items()},
            isl_cv2=1.5,
            arrival_cv2=float(rng.uniform(1.0, 8.0)),  # dispersion of 15-s counts
            isl_distribution=lengths.from_buckets(
                token_bounds, [float((prompts <= b).sum()) for b in token_bounds], float(prompts.sum()), 2000.0
            ),
            ttft_histogram=LatencyHistogram.from_cumulative(
                ttft_bounds, [float((ttfts <= b).sum()) for b in ttft_bounds], 2000.0
            ),
            running_requests={"decode": 200.0},
            itl_mean_s=0.02,
            prefill_time_mean_s=0.3,
        )
        start = time.perf_counter()  # the histograms above are read once per cycle outside plan()
        decision = planner.plan(spec, obs, state, obs.time_s, perf)
        latencies.append(time.perf_counter() - start)
        fits += decision.state.tail is not None and decision.state.tail.time_s == obs.time_s
        state = decision.state
        counts = {r: d.desired_replicas for r, d in decision.pools.items()}
    ms = sorted(x * 1000 for x in latencies)
    print(f"plan() one disaggregated pool, 1000 decisions: median {statistics.median(ms):.2f} ms, "
          f"p99 {ms[989]:.2f} ms, max {ms[-1]:.2f} ms")  # fmt: skip
    print(f"1000 pools (one decision each) in one process: {sum(latencies):.2f} s; tail refitted in {fits} decisions")


if __name__ == "__main__":
    main()
