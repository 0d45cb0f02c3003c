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
from tokenscale.planner import plan as planner
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    spec = manifests.load_one_pool(ROOT / "examples" / "vllm-disaggregated-70b.yaml").pool.spec
    perf = profiles.resolve_all(spec)
    rng = np.random.default_rng(0)
    state = planner.PlannerState()
    latencies = []
    for i in range(1000):
        obs = Observation(
            time_s=30.0 * i,
            request_rate_per_s=float(rng.uniform(2, 40)),
            isl_mean_tokens=float(rng.uniform(500, 4000)),
            osl_mean_tokens=float(rng.uniform(100, 600)),
            replicas={"prefill": ReplicaCounts(3, 3), "decode": ReplicaCounts(4, 4)},
            isl_cv2=1.5,
            running_requests={"decode": 200.0},
            tpot_mean_s=0.02,
            prefill_time_mean_s=0.3,
        )
        start = time.perf_counter()
        decision = planner.plan(spec, obs, state, obs.time_s, perf)
        latencies.append(time.perf_counter() - start)
        state = decision.state
    ms = sorted(x * 1000 for x in latencies)
    print(f"plan() one disaggregated pool, 1000 decisions: median {statistics.median(ms):.2f} ms, "
          f"p99 {ms[989]:.2f} ms, max {ms[-1]:.2f} ms")  # fmt: skip
    print(f"1000 pools (one decision each) in one process: {sum(latencies):.2f} s")


if __name__ == "__main__":
    main()
