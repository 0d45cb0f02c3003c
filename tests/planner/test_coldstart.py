"""Cold starts timed on the pools' own scale-ups, and the horizon `plan()` forecasts over with them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tokenscale import api
from tokenscale.planner import coldstart, profiles
from tokenscale.planner import plan as planner
from tokenscale.planner.coldstart import ColdStarts, ScaleUp
from tokenscale.planner.observation import Observation, ReplicaCounts

T0 = 1_790_000_000.0
ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 30.0  # ready was first seen this long after the cycle that saw the replicas starting


@pytest.mark.parametrize(
    ("previous", "seen", "measured", "timing"),
    [
        pytest.param(ColdStarts(), ReplicaCounts(4, 2), {}, {}, id="nothing-recorded"),
        pytest.param(
            ColdStarts(timing={"decode": ScaleUp(T0 - 100, 4)}),
            ReplicaCounts(4, 2),
            {},
            {"decode": ScaleUp(T0 - 100, 4)},
            id="still-starting-keeps-timing",
        ),
        pytest.param(
            ColdStarts(timing={"decode": ScaleUp(T0 - 100, 4)}),
            ReplicaCounts(4, 4),
            {"decode": 100.0 - INTERVAL_S / 2},
            {},
            id="ready-first-measurement",
        ),
        pytest.param(
            ColdStarts({"decode": 200.0}, {"decode": ScaleUp(T0 - 100, 4)}),
            ReplicaCounts(4, 4),
            {"decode": (200.0 + 100.0 - INTERVAL_S / 2) / 2},
            {},
            id="ready-blended-with-previous",
        ),
        pytest.param(
            ColdStarts({"decode": 200.0}, {"decode": ScaleUp(T0 - 100, 4)}),
            ReplicaCounts(2, 2),
            {"decode": 200.0},
            {},
            id="scaled-back-before-ready-stops-timing",
        ),
    ],
)
def test_cold_start_is_timed_from_scale_up_to_ready(
    previous: ColdStarts, seen: ReplicaCounts, measured: dict[str, float], timing: dict[str, ScaleUp]
) -> None:
    got = coldstart.advance(previous, {"decode": seen}, T0, INTERVAL_S)
    assert got.measured_s == pytest.approx(measured)
    assert got.timing == timing


def test_a_scale_up_already_timed_keeps_its_start() -> None:
    timed = ColdStarts(timing={"decode": ScaleUp(T0 - 100, 4)})
    got = coldstart.started(timed, {"decode": 6, "prefill": 2}, T0)
    assert got.timing == {"decode": ScaleUp(T0 - 100, 4), "prefill": ScaleUp(T0, 2)}


def _spec() -> api.InferencePoolSpec:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-disaggregated-70b.yaml").read_text().split("\n---")[0])
    return api.InferencePoolSpec.model_validate(copy.deepcopy(doc["spec"]))


def _obs(t: float, rate: float, prefill: ReplicaCounts, decode: ReplicaCounts) -> Observation:
    return Observation(t, rate, 2000.0, 300.0, {"prefill": prefill, "decode": decode})


def test_plan_forecasts_over_the_slowest_measured_cold_start() -> None:
    spec = _spec()
    perf = profiles.resolve_all(spec)
    one = ReplicaCounts(1, 1)
    before = planner.plan(spec, _obs(T0, 20.0, one, one), planner.PlannerState(), T0, perf)
    assert before.planned is not None and before.planned.horizon_s == spec.forecast.cold_start.seconds
    assert before.scale_ups(), "the test wants a scale-up to time"
    written = before.written(before.scale_ups())
    asked = before.scale_ups()
    starting = {r: ReplicaCounts(n, 1) for r, n in asked.items()}
    still = planner.plan(spec, _obs(T0 + 30, 20.0, starting.get("prefill", one), starting.get("decode", one)),
                         written.state, T0 + 30, perf)  # fmt: skip
    assert still.planned is not None and still.planned.horizon_s == spec.forecast.cold_start.seconds
    ready = {r: ReplicaCounts(n, n) for r, n in asked.items()}
    after = planner.plan(spec, _obs(T0 + 90, 20.0, ready.get("prefill", one), ready.get("decode", one)),
                         still.state, T0 + 90, perf)  # fmt: skip
    # Ready at some moment within the last interval (30 s): the midpoint, 90 − 15.
    assert after.planned is not None and after.planned.horizon_s == 90.0 - spec.interval.seconds / 2
    assert after.state.cold_starts.measured_s == {r: 90.0 - spec.interval.seconds / 2 for r in asked}
    assert after.state.cold_starts.timing == {}


def test_a_held_decision_still_times_the_cold_start() -> None:
    spec = _spec()
    timed = planner.PlannerState(cold_starts=ColdStarts(timing={"decode": ScaleUp(T0 - 60, 3)}))
    obs = Observation(T0, None, 2000.0, 300.0, {"prefill": ReplicaCounts(1, 1), "decode": ReplicaCounts(3, 3)})
    held = planner.plan(spec, obs, timed, T0, profiles.resolve_all(spec))
    assert held.held
    assert held.state.cold_starts == ColdStarts({"decode": 60.0 - spec.interval.seconds / 2}, {})
