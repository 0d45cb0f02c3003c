"""References found with the simulator: best-static (fewest replicas meeting ≥ 99% of windows), clairvoyant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenscale import manifests
from tokenscale.planner import profiles
from tokenscale.sim import loop, references
from tokenscale.sim.workload import Bursts, LengthDistribution, make_workload, synthetic_workload

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


def _step_setup() -> loop.SimSetup:
    """10 minutes at 2 req/s, then 10 at 12: the second load needs more replicas than the first has."""
    rng = np.random.default_rng(9)
    quiet = synthetic_workload(rng, 600.0, 2.0, shape="constant")
    loud = synthetic_workload(rng, 600.0, 12.0, shape="constant")
    w = make_workload(
        "step",
        np.concatenate((quiet.arrival_s, loud.arrival_s + 600.0)),
        np.concatenate((quiet.isl_tokens, loud.isl_tokens)),
        np.concatenate((quiet.osl_tokens, loud.osl_tokens)),
        shift_to_zero=False,
    )
    return loop.SimSetup(SPEC, w, PERF, PERF, cold_start_s=240.0, seed=9)


def test_clairvoyant_late_misses_only_what_the_cold_start_hides() -> None:
    setup = _step_setup()
    clair = references.clairvoyant(setup, workers=2)
    late = references.clairvoyant_late(setup, clair)
    assert late.counts == clair.counts
    # The step's window needs replicas that come a cold start (240 s of its 300) after it starts:
    # the late replay misses it, and meets every window whose need did not rise.
    assert clair.counts[2] != clair.counts[1]
    assert 0.5 <= late.windows_meeting_both < 1.0
    # It pays for the replicas while they start and while the extra ones drain, never less than clairvoyant.
    assert late.gpu_hours >= clair.gpu_hours * 0.99


def test_clairvoyant_late_meets_a_steady_load_like_clairvoyant() -> None:
    rng = np.random.default_rng(3)
    w = synthetic_workload(rng, 1200.0, 4.0, shape="constant")
    setup = loop.SimSetup(SPEC, w, PERF, PERF, cold_start_s=240.0, seed=3)
    clair = references.clairvoyant(setup, workers=2)
    late = references.clairvoyant_late(setup, clair)
    assert late.windows_meeting_both >= clair.windows_meeting_both - 0.25
    assert late.gpu_hours == pytest.approx(clair.gpu_hours, rel=0.15)
