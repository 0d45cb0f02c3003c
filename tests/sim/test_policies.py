"""The baseline policies, step by step, on hand-computed inputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tokenscale import api
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.sim import policies

ROOT = Path(__file__).resolve().parents[2]


def _spec(**pool_changes: Any) -> api.InferencePoolSpec:
    doc = yaml.safe_load((ROOT / "examples" / "vllm-disaggregated-70b.yaml").read_text().split("\n---")[0])
    spec = copy.deepcopy(doc["spec"])
    spec["pools"]["decode"]["minReplicas"] = 1
    spec["pools"]["decode"].update(pool_changes)
    return api.InferencePoolSpec.model_validate(spec)


SPEC = _spec()


def _view(util: dict[str, float], current: dict[str, int], rate: float = 10.0, **kw: Any) -> policies.ControlView:
    obs = Observation(
        time_s=0.0,
        request_rate_per_s=rate,
        isl_mean_tokens=2000.0,
        osl_mean_tokens=300.0,
        replicas={r: ReplicaCounts(c, c) for r, c in current.items()},  # type: ignore[misc]
        running_requests=kw.pop("running", {}),
    )
    return policies.ControlView(obs, util, kw.pop("ttft", None), kw.pop("itl", None), 100, 15.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("util", "current", "expected"),
    [
        pytest.param(1.4, 2, 4, id="double-when-at-twice-target"),
        pytest.param(0.75, 2, 2, id="within-tolerance"),
        pytest.param(7.0, 2, 6, id="scale-up-limited-to-max-of-double-or-plus-four"),
        pytest.param(0.35, 4, 4, id="down-held-by-window"),
    ],
)
def test_hpa_step(util: float, current: int, expected: int) -> None:
    hpa = policies.HpaPolicy(SPEC)
    state = policies.HpaState(((0.0, {"prefill": current, "decode": 1}),))
    counts, _ = hpa.decide(60.0, _view({"prefill": util, "decode": 0.7}, {"prefill": current, "decode": 1}), state)
    assert counts["prefill"] == expected


def test_hpa_scales_down_after_window() -> None:
    hpa = policies.HpaPolicy(SPEC)
    state = policies.HpaState(((0.0, {"prefill": 4, "decode": 1}),))
    counts, _ = hpa.decide(400.0, _view({"prefill": 0.35, "decode": 0.7}, {"prefill": 4, "decode": 1}), state)
    assert counts["prefill"] == 2


def test_dynamo_prefill_is_throughput_over_profiled_throughput() -> None:
    perf = profiles.resolve_all(SPEC)
    dyn = policies.DynamoPolicy(SPEC, perf)
    counts, state = dyn.decide(180.0, _view({}, {"prefill": 1, "decode": 1}, rate=10.0), policies.DynamoState())
    per_request_s = float(perf["prefill"].prefill.service_time_s(2000.0))
    # rate·ISL / (ISL/s(ISL)/gpus) / gpus = rate·s(ISL) replicas, rounded up.
    assert counts["prefill"] == int(np.ceil(10.0 * per_request_s - 1e-9))
    assert isinstance(state, policies.DynamoState)


def test_dynamo_correction_factor_follows_observed_itl() -> None:
    perf = profiles.resolve_all(SPEC)
    dyn = policies.DynamoPolicy(SPEC, perf)
    view = _view({}, {"prefill": 2, "decode": 2}, rate=10.0, running={"decode": 100.0}, itl=0.04)
    _, state = dyn.decide(180.0, view, policies.DynamoState())
    expected = 0.04 / float(perf["decode"].decode.step_time_s(50.0, 2150.0))
    assert state.decode_correction == pytest.approx(expected)  # type: ignore[attr-defined]


def test_peak_minute_load() -> None:
    arrivals = np.concatenate([np.linspace(0, 59, 60), np.linspace(60, 119, 240)])
    load = policies.peak_minute_load(arrivals, np.full(300, 100), np.full(300, 10))
    assert load.rate_per_s == pytest.approx(4.0)
    assert load.isl_mean_tokens == 100.0 and load.isl_cv2 == 0.0
