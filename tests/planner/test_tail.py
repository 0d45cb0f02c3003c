"""The closed-loop tail fit: invert the TTFT model at the current count, smooth, guard, and plan with it."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tokenscale import api
from tokenscale.planner import plan as planner
from tokenscale.planner import profiles, sizing, tail
from tokenscale.planner.observation import DataNote, LatencyHistogram, Observation, ReplicaCounts

ROOT = Path(__file__).resolve().parents[2]
TTFT_BOUNDS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _spec() -> api.InferencePoolSpec:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-disaggregated-70b.yaml").read_text().split("\n---")[0])
    spec = copy.deepcopy(doc["spec"])
    spec.pop("gpuBudget", None)
    spec["pools"]["prefill"]["maxReplicas"] = 32
    return api.InferencePoolSpec.model_validate(spec)


SPEC = _spec()
PERF = profiles.resolve_all(SPEC)
LOAD = sizing.Load(rate_per_s=24.0, isl_mean_tokens=1200.0, osl_mean_tokens=250.0, isl_cv2=0.8)


def _histogram(exceedance_at: dict[float, float], samples: float = 5000.0) -> LatencyHistogram:
    """A TTFT histogram with the given P(TTFT > bound) at some bounds (1 below the lowest given, 0 above)."""
    fractions = []
    for b in TTFT_BOUNDS_S:
        above = [e for bound, e in exceedance_at.items() if bound <= b]
        below = [e for bound, e in exceedance_at.items() if bound > b]
        fractions.append(1.0 - (min(above) if above else (1.0 if below else 0.0)))
    return LatencyHistogram(TTFT_BOUNDS_S, tuple(fractions), samples)


def _obs(t: float, prefill: int, hist: LatencyHistogram | None, **extra: Any) -> Observation:
    return Observation(
        time_s=t,
        request_rate_per_s=LOAD.rate_per_s,
        isl_mean_tokens=LOAD.isl_mean_tokens,
        osl_mean_tokens=LOAD.osl_mean_tokens,
        isl_cv2=LOAD.isl_cv2,
        osl_cv2=1.0,
        arrival_cv2=extra.pop("arrival_cv2", 1.0),
        replicas=extra.pop("replicas", {"prefill": ReplicaCounts(prefill, prefill), "decode": ReplicaCounts(2, 2)}),
        ttft_histogram=hist,
        **extra,
    )


@pytest.mark.parametrize("true_cv2", [pytest.param(v, id=f"ca2-{v:g}") for v in (0.7, 2.0, 6.0, 20.0)])
def test_invert_recovers_the_burstiness_that_produced_a_tail(true_cv2: float) -> None:
    def predict(grid: np.ndarray) -> np.ndarray:
        return sizing.prefill_ttft_exceedance_by_cv2(8, LOAD, PERF["prefill"], 0.25, grid)

    observed = float(predict(np.array([true_cv2]))[0])
    assert tail.invert(predict, observed) == pytest.approx(true_cv2, rel=0.03)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [pytest.param(0.0, tail.MIN_CV2, id="calmer-than-the-calmest"), pytest.param(1.0, tail.MAX_CV2, id="burstier")],
)
def test_invert_clamps_to_the_fit_range(observed: float, expected: float) -> None:
    def predict(grid: np.ndarray) -> np.ndarray:
        return sizing.prefill_ttft_exceedance_by_cv2(8, LOAD, PERF["prefill"], 0.25, grid)

    assert tail.invert(predict, observed) == expected


def test_update_moves_halfway_after_one_half_life_and_forgets_stale_fits() -> None:
    first = tail.update(None, 2.0, 0.0)
    second = tail.update(first, 8.0, tail.HALF_LIFE_S)
    assert second.arrival_cv2 == pytest.approx(4.0)  # geometric mean: halfway in log space
    assert second.current(tail.HALF_LIFE_S + tail.STALE_AFTER_S + 1) is None
    assert tail.update(second, 8.0, 10 * tail.STALE_AFTER_S).arrival_cv2 == 8.0


def _predict(replicas: int, load: sizing.Load, bound_s: float) -> Any:
    def predict(grid: np.ndarray) -> np.ndarray:
        return sizing.prefill_ttft_exceedance_by_cv2(replicas, load, PERF["prefill"], bound_s, grid)

    return predict


LONG_PROMPTS = sizing.Load(rate_per_s=2.5, isl_mean_tokens=15_000.0, osl_mean_tokens=300.0, isl_cv2=1.4)


@pytest.mark.parametrize(
    ("replicas", "load", "bound_s", "moves"),
    [
        # 1,200-token prompts at 4 replicas (busy ≈ 60%): the tail above 250 ms is waiting, and 1,100
        # requests pin c_a² to 2.5–3.5.
        pytest.param(4, LOAD, 0.25, True, id="waiting-sets-the-tail"),
        # 15k-token prompts at 9 replicas (busy ≈ 35%, the Mooncake trace's lengths): the tail above
        # 2.5 s is mostly the prompts' own prefill, so the same sample brackets c_a² in 0.5–5.4.
        pytest.param(9, LONG_PROMPTS, 2.5, False, id="prompt-lengths-set-the-tail"),
    ],
)
def test_a_fit_moves_only_when_the_window_contradicts_the_burstiness_in_use(
    replicas: int, load: sizing.Load, bound_s: float, moves: bool
) -> None:
    predict = _predict(replicas, load, bound_s)
    observed = float(predict(np.array([3.0]))[0])  # what c_a² = 3 would show
    fitted = tail.refit(None, predict, observed, 1100.0, 600.0)
    if moves:
        # To the bracket's end nearest the prior: the least burstiness the window demands.
        low = tail.invert(predict, observed - tail.CONTRADICTION_SE * math.sqrt(observed * (1 - observed) / 1100.0))
        assert fitted is not None and fitted.arrival_cv2 == pytest.approx(low, rel=0.02)
        assert tail.PRIOR_CV2 < fitted.arrival_cv2 < 3.0
    else:
        assert fitted is None  # the prior (Poisson) stands
        assert tail.invert(predict, observed) == pytest.approx(3.0, rel=0.05)  # the point fit alone would say 3


def test_a_window_that_agrees_with_the_fit_in_use_keeps_it_fresh() -> None:
    predict = _predict(4, LOAD, 0.25)
    previous = tail.TailFit(4.0, 0.0)
    agreeing = float(predict(np.array([4.0]))[0])
    kept = tail.refit(previous, predict, agreeing, 1100.0, tail.STALE_AFTER_S - 10.0)
    assert kept == tail.TailFit(4.0, tail.STALE_AFTER_S - 10.0)
    assert kept.current(tail.STALE_AFTER_S + 60.0) == 4.0  # not stale: the window confirmed it
    # A window that contradicts it moves the fit towards the bracket's nearer end, not its point fit.
    observed = float(predict(np.array([12.0]))[0])
    moved = tail.refit(previous, predict, observed, 1100.0, tail.HALF_LIFE_S)
    low = tail.invert(predict, observed - tail.CONTRADICTION_SE * math.sqrt(observed * (1 - observed) / 1100.0))
    assert 4.0 < low < 12.0
    assert moved is not None and moved.arrival_cv2 == pytest.approx(
        tail.update(previous, low, tail.HALF_LIFE_S).arrival_cv2, rel=0.02
    )


def test_a_window_calmer_than_the_fit_in_use_moves_it_down_to_the_bracket_top() -> None:
    predict = _predict(4, LOAD, 0.25)
    observed = float(predict(np.array([1.5]))[0])  # what c_a² = 1.5 would show, against 6 in use
    moved = tail.refit(tail.TailFit(6.0, 0.0), predict, observed, 1100.0, tail.HALF_LIFE_S)
    high = tail.invert(predict, observed + tail.CONTRADICTION_SE * math.sqrt(observed * (1 - observed) / 1100.0))
    assert 1.5 < high < 6.0
    assert moved is not None and moved.arrival_cv2 == pytest.approx(
        tail.update(tail.TailFit(6.0, 0.0), high, tail.HALF_LIFE_S).arrival_cv2, rel=1e-6
    )
    assert moved.arrival_cv2 > tail.update(tail.TailFit(6.0, 0.0), 1.5, tail.HALF_LIFE_S).arrival_cv2


@pytest.mark.parametrize(
    ("exceedance", "samples", "expected"),
    [
        pytest.param({0.25: 0.12}, 5000.0, 0.25, id="nearest-to-ten-percent"),
        pytest.param({0.1: 0.45, 0.25: 0.04}, 5000.0, 0.25, id="prefers-the-closer-tail"),
        pytest.param({0.25: 0.12}, 50.0, None, id="too-few-requests-above"),
    ],
)
def test_tail_bucket_picks_the_bound_nearest_the_objective(
    exceedance: dict[float, float], samples: float, expected: float | None
) -> None:
    h = _histogram(exceedance, samples)
    i = tail.tail_bucket(h.bounds_s, h.fraction_below, h.samples, 0.9)
    assert (None if i is None else h.bounds_s[i]) == expected


def test_plan_sizes_with_the_burstiness_the_observed_tail_implies() -> None:
    # At 8 replicas the model with Poisson arrivals puts ~1% of TTFTs above 250 ms; the fleet shows 25%.
    calm = planner.plan(SPEC, _obs(600.0, 8, _histogram({0.25: 0.01})), planner.PlannerState(), 600.0, PERF)
    bursty = planner.plan(SPEC, _obs(600.0, 8, _histogram({0.25: 0.25})), planner.PlannerState(), 600.0, PERF)
    assert bursty.state.tail is not None and calm.state.tail is not None
    assert bursty.state.tail.arrival_cv2 > 3.0 * calm.state.tail.arrival_cv2
    assert bursty.planned is not None and bursty.planned.load.arrival_cv2 == bursty.state.tail.arrival_cv2
    # The model's recommendation (before stabilization holds it at 8) needs more replicas for the tail.
    wanted = {name: d.state.recommendations[-1].replicas["prefill"] for name, d in (("calm", calm), ("bursty", bursty))}
    assert wanted["bursty"] >= wanted["calm"] + 3, wanted


def test_no_fit_from_a_saturated_pool() -> None:
    # At 24 req/s of 1,200-token prompts (E[s] ≈ 0.1 s) 2 replicas are saturated: their TTFT is a
    # backlog draining, not bursts. 4 replicas (busy ≈ 60%) with the same tail do get a fit.
    busy = LOAD.rate_per_s * sizing.prefill_mean_service_s(LOAD, PERF["prefill"])
    assert busy / 2 >= tail.MAX_FIT_UTILIZATION > busy / 4
    tail_seen = _histogram({0.25: 0.3})
    saturated = planner.plan(SPEC, _obs(600.0, 2, tail_seen), planner.PlannerState(), 600.0, PERF)
    assert saturated.state.tail is None
    assert planner.plan(SPEC, _obs(600.0, 4, tail_seen), planner.PlannerState(), 600.0, PERF).state.tail is not None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"replicas": {"prefill": ReplicaCounts(8, 6), "decode": ReplicaCounts(2, 2)}}, id="starting"),
        pytest.param({"notes": (DataNote("ttft_quantile", "too-few-samples", "3 observations"),)}, id="few-samples"),
        pytest.param({"hist": None}, id="no-histogram"),
        pytest.param({"scaled_at": 590.0}, id="scaled-within-the-window"),
        # All 8 ready now, but a cycle within the window saw one still starting (a scale-up's replica
        # comes ready a cold start after the scale): the window's tail was made by fewer replicas.
        pytest.param({"starting_at": 450.0}, id="a-replica-came-ready-within-the-window"),
    ],
)
def test_no_fit_from_a_window_that_cannot_show_the_tail_at_this_count(change: dict[str, Any]) -> None:
    hist = change.pop("hist", _histogram({0.25: 0.25}))
    scaled_at = change.pop("scaled_at", None)
    starting_at = change.pop("starting_at", None)
    state = planner.PlannerState(
        last_scale_time_s={"prefill": scaled_at} if scaled_at is not None else {},
        starting_seen_s={"prefill": starting_at} if starting_at is not None else {},
    )
    obs = _obs(600.0, 8, hist, **change)
    decision = planner.plan(SPEC, obs, state, 600.0, PERF)
    assert decision.state.tail is None
