"""The control loop: observations built from the fleet's metrics, and policies acting on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenscale import manifests
from tokenscale.planner import profiles
from tokenscale.sim import loop, policies
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.workload import LengthDistribution, make_workload, synthetic_workload

ROOT = Path(__file__).resolve().parents[2]
SPEC = manifests.load_one_pool(ROOT / "examples" / "vllm-disaggregated-70b.yaml").pool.spec
PERF = profiles.resolve_all(SPEC)


def _setup(w, cold_start_s: float = 0.0) -> loop.SimSetup:  # type: ignore[no-untyped-def]
    return loop.SimSetup(SPEC, w, PERF, PERF, cold_start_s)


def test_observe_reads_rate_lengths_and_quantiles_from_the_window() -> None:
    rng = np.random.default_rng(3)
    w = synthetic_workload(rng, 900.0, 8.0, shape="constant", bursts=None,
                           isl=LengthDistribution(1500, 0.8), osl=LengthDistribution(200, 0.5))  # fmt: skip
    fleet = Fleet(w, loop.fleet_config(_setup(w), {"prefill": 3, "decode": 2}, cold_start=False), rng)
    first = fleet.snapshot(300.0)
    second = fleet.snapshot(600.0)
    view = loop.observe(SPEC, first, second, w.arrival_s, ("prefill", "decode"))
    obs = view.observation
    in_window = (w.arrival_s >= 300.0) & (w.arrival_s < 600.0)
    assert obs.request_rate_per_s == pytest.approx(in_window.sum() / 300.0, rel=0.01)
    assert obs.isl_mean_tokens == pytest.approx(1500, rel=0.08)
    assert obs.isl_cv2 == pytest.approx(0.64, rel=0.35)  # from 1-2-5 buckets: coarse by design
    # Poisson: the dispersion of 20 counts of 15 s (the scrape resolution) has sd ≈ √(2/19) ≈ 0.3.
    assert obs.arrival_cv2 == pytest.approx(1.0, abs=0.6)
    assert obs.ttft_quantile_s is not None and obs.tpot_quantile_s is not None
    assert obs.replicas["prefill"].ready == 3 and obs.running_requests["decode"] > 0
    assert 0.0 < view.utilization["prefill"] <= 1.0


def test_idle_window_reports_missing_lengths_not_zero() -> None:
    w = make_workload("two", [0.0, 1000.0], [100, 100], [10, 10])
    fleet = Fleet(
        w, loop.fleet_config(_setup(w), {"prefill": 1, "decode": 1}, cold_start=False), np.random.default_rng(0)
    )
    a, b = fleet.snapshot(100.0), fleet.snapshot(400.0)
    obs = loop.observe(SPEC, a, b, w.arrival_s, ("prefill", "decode")).observation
    assert obs.request_rate_per_s == 0.0
    assert obs.isl_mean_tokens is None and {n.signal for n in obs.notes} == {"isl_mean", "osl_mean"}


def test_static_run_serves_every_request_and_counts_gpu_seconds() -> None:
    rng = np.random.default_rng(4)
    w = synthetic_workload(rng, 600.0, 5.0, shape="constant", bursts=None)
    run = loop.run_policy(_setup(w), policies.StaticPolicy({"prefill": 2, "decode": 1}), 60.0)
    assert np.all(np.isfinite(run.ttft_s)) and run.scale_actions == 0
    # 2 prefill + 1 decode replicas of 4 GPUs from t = 0 until the last request finishes.
    assert run.gpu_seconds >= 12 * 600.0 and run.gpu_seconds < 12 * 700.0


def test_tokenscale_follows_a_load_step_up_and_back_down() -> None:
    rng = np.random.default_rng(5)
    low = synthetic_workload(rng, 900.0, 3.0, shape="constant", bursts=None)
    high = synthetic_workload(rng, 900.0, 20.0, shape="constant", bursts=None)
    w = make_workload(
        "step",
        np.concatenate([low.arrival_s, high.arrival_s + 900.0, low.arrival_s + 1800.0]),
        np.concatenate([low.isl_tokens, high.isl_tokens, low.isl_tokens]),
        np.concatenate([low.osl_tokens, high.osl_tokens, low.osl_tokens]),
        duration_s=2700.0,
    )
    run = loop.run_policy(_setup(w, cold_start_s=60.0), policies.TokenscalePolicy(SPEC, PERF), 120.0)
    tl = run.timeline
    before = tl.replicas["prefill"][tl.t_s <= 900.0].max()
    during = tl.replicas["prefill"][(tl.t_s > 1000.0) & (tl.t_s <= 1800.0)].min()
    after = tl.replicas["prefill"][tl.t_s >= 2600.0].max()
    assert during > before
    assert after < during
    first_up = tl.t_s[(tl.t_s > 900.0) & (tl.replicas["prefill"] > before)][0]
    assert first_up <= 900.0 + 2 * SPEC.interval.seconds


def test_after_a_step_faster_than_a_cold_start_the_backlog_is_drained_when_the_replicas_come() -> None:
    # 4 → 20 req/s at 1,200 s, a 240-s cold start: the queue the step builds before any new replica
    # is ready (thousands of prompts) is asked to drain in the (1 − 0.9)·300 = 30 s the p90 over a
    # 5-minute window allows, by prefill and by decode, which takes prefill's backlog as it drains.
    rng = np.random.default_rng(7)
    quiet, loud = (synthetic_workload(rng, 1200.0, r, shape="constant", bursts=None) for r in (4.0, 20.0))
    w = make_workload(
        "step",
        np.concatenate([quiet.arrival_s, loud.arrival_s + 1200.0]),
        np.concatenate([quiet.isl_tokens, loud.isl_tokens]),
        np.concatenate([quiet.osl_tokens, loud.osl_tokens]),
        duration_s=2400.0,
    )
    setup = loop.SimSetup(SPEC, w, PERF, PERF, 240.0, 0.0, 7, initial={"prefill": 1, "decode": 2})
    policy = policies.TokenscalePolicy(SPEC, PERF)
    run = loop.run_policy(setup, policy, loop.window_for(policy, SPEC))
    tl = run.timeline
    ready_s = float(tl.t_s[(tl.t_s > 1200.0) & (tl.ready["prefill"] > 1)][0])  # the first new replica
    assert ready_s >= 1200.0 + 240.0
    # Every pool asked for at the step's first decision: decode too, before its queue forms.
    first = (tl.t_s > 1200.0) & (tl.t_s <= 1200.0 + SPEC.interval.seconds)
    assert tl.replicas["prefill"][first].max() >= 8 and tl.replicas["decode"][first].max() > 2
    # From two intervals after the replicas come, the window meets the TTFT objective.
    after = (run.arrival_s >= ready_s + 2 * SPEC.interval.seconds) & (run.arrival_s < ready_s + 360.0)
    assert np.quantile(run.ttft_s[after], 0.9) <= SPEC.objectives.ttft.target.seconds


@pytest.mark.parametrize(
    ("name", "window_s", "provisioned"),
    [
        pytest.param("tokenscale", max(SPEC.metrics.window.seconds, SPEC.interval.seconds), False, id="tokenscale"),
        pytest.param("static", max(SPEC.metrics.window.seconds, 60.0), True, id="static-provisioned"),
        pytest.param("hpa", 15.0, False, id="hpa-own-period"),
        pytest.param("dynamo", 5.0, False, id="dynamo-own-interval"),
        pytest.param("llm-d", 15.0, False, id="llm-d-own-period"),
    ],
)
def test_registry_builds_each_policy_with_its_window_and_start(name: str, window_s: float, provisioned: bool) -> None:
    w = synthetic_workload(np.random.default_rng(6), 300.0, 5.0, shape="constant", bursts=None)
    (policy,) = loop.build_policies(_setup(w), [name])
    assert policy.name == name and loop.window_for(policy, SPEC) == window_s and policy.provisioned is provisioned
    counts, _ = policy.initial(SPEC)
    assert set(counts) == {"prefill", "decode"}


def test_registry_names_every_policy_and_refuses_an_unknown_one() -> None:
    assert policies.POLICY_NAMES == ("tokenscale", "static", "hpa", "dynamo", "llm-d")
    w = make_workload("empty", [], [], [])
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        loop.build_policies(_setup(w), ["nope"])
