"""References found with the simulator: best-static (fewest replicas meeting ≥ 99% of windows), clairvoyant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenscale import manifests
from tokenscale.planner import profiles
from tokenscale.sim import loop, references
from tokenscale.sim.workload import Bursts, LengthDistribution, synthetic_workload

ROOT = Path(__file__).resolve().parents[2]
SPEC = manifests.load_one_pool(ROOT / "examples" / "vllm-disaggregated-70b.yaml").pool.spec
PERF = profiles.resolve_all(SPEC)


def _setup() -> loop.SimSetup:
    rng = np.random.default_rng(5)
    w = synthetic_workload(rng, 1800.0, 5.0, shape="diurnal", bursts=Bursts(),
                           isl=LengthDistribution(1500, 1.0), osl=LengthDistribution(250, 1.0))  # fmt: skip
    return loop.SimSetup(SPEC, w, PERF, PERF, cold_start_s=240.0, seed=5)


def test_best_static_is_the_smallest_fleet_meeting_the_windows() -> None:
    setup = _setup()
    ref = references.best_static(setup)
    (counts,) = ref.counts
    assert ref.windows_meeting_both >= references.STATIC_WINDOW_SHARE
    flags = references._met(setup, counts, 0.0, setup.workload.duration_s)
    assert sum(flags) / len(flags) == ref.windows_meeting_both
    # One replica fewer in a pool above its minimum misses a window (the search found the edge).
    for role, n in counts.items():
        if n > SPEC.active_pools()[role].min_replicas:
            fewer = references._met(setup, {**counts, role: n - 1}, 0.0, setup.workload.duration_s)
            assert sum(fewer) / len(fewer) < references.STATIC_WINDOW_SHARE, role
    gpus = sum(counts[r] * SPEC.active_pools()[r].gpus_per_replica for r in counts)
    assert ref.gpu_hours == gpus * setup.workload.duration_s / 3600.0


def test_clairvoyant_meets_each_window_with_no_more_than_best_static() -> None:
    setup = _setup()
    clair = references.clairvoyant(setup, workers=2)
    static = references.best_static(setup)
    assert len(clair.counts) == 6  # 30 minutes of 5-minute windows
    assert clair.windows_meeting_both == 1.0
    assert clair.gpu_hours <= static.gpu_hours
    for i, counts in enumerate(clair.counts):
        start = i * 300.0
        assert all(references._met(setup, counts, start, start + 300.0)), i
