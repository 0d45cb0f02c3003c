"""The baseline policies, step by step, on hand-computed inputs."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tokenscale import api
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.sim import policies
from tokenscale.sim.snapshot import PoolSnapshot

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
    return policies.ControlView(obs, util, kw.pop("ttft", None), kw.pop("itl", None), 100, 15.0, **kw)


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
    # The throughput loop's window began 10 s ago and saw 100 requests: 10 req/s.
    fresh = policies.DynamoState(window_start_s=170.0)
    counts, state = dyn.decide(180.0, _view({}, {"prefill": 1, "decode": 1}, rate=10.0), fresh)
    per_request_s = float(perf["prefill"].prefill.service_time_s(2000.0))
    # rate·ISL / (ISL/s(ISL)/gpus) / gpus = rate·s(ISL) replicas, rounded up.
    assert counts["prefill"] == int(np.ceil(10.0 * per_request_s - 1e-9))
    assert isinstance(state, policies.DynamoState)


def test_dynamo_correction_factor_follows_observed_itl() -> None:
    perf = profiles.resolve_all(SPEC)
    dyn = policies.DynamoPolicy(SPEC, perf)
    view = _view({}, {"prefill": 2, "decode": 2}, rate=10.0, running={"decode": 100.0}, itl=0.04)
    _, state = dyn.decide(180.0, view, policies.DynamoState(window_start_s=170.0))
    expected = 0.04 / float(perf["decode"].decode.step_time_s(50.0, 2150.0))
    assert state.decode_correction == pytest.approx(expected)  # type: ignore[attr-defined]


def _gauges(
    ready: int, waiting_tokens: float = 0.0, held: float = 0.0, running: int = 0, kv: float = 0.0
) -> PoolSnapshot:
    return PoolSnapshot(
        replicas_current=ready, replicas_ready=ready, replicas_starting=0, replicas_draining=0,
        running_requests=running, waiting_requests=0, kv_usage_fraction=kv, held_tokens=held,
        waiting_prompt_tokens=waiting_tokens, gpus=4 * ready, gpu_seconds_total=0.0, busy_replica_seconds_total=0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("waiting_tokens", "ready", "step"),
    [
        pytest.param(4 * 40_000.0, 4, 1, id="queue-beyond-the-ttft-target-adds-one"),
        pytest.param(0.0, 4, -1, id="no-queue-removes-one"),
        pytest.param(0.0, 1, 0, id="never-below-one"),
        pytest.param(4 * 4_000.0, 4, 0, id="queue-that-would-not-fit-on-three-holds"),
    ],
)
def test_dynamo_load_loop_moves_one_replica_from_queued_prefill_tokens(
    waiting_tokens: float, ready: int, step: int
) -> None:
    dyn = policies.DynamoPolicy(SPEC, profiles.resolve_all(SPEC))  # prefill minReplicas 1
    state = policies.DynamoState(next_throughput_s=1e9, isl_tokens=2000.0, osl_tokens=300.0)
    view = _view({}, {"prefill": ready, "decode": 1}, gauges={"prefill": _gauges(ready, waiting_tokens)})
    counts, _ = dyn.decide(5.0, view, state)
    assert counts["prefill"] == max(ready + step, 1)


def test_dynamo_waits_while_replicas_start() -> None:
    dyn = policies.DynamoPolicy(SPEC, profiles.resolve_all(SPEC))
    state = policies.DynamoState(next_throughput_s=1e9, isl_tokens=2000.0, osl_tokens=300.0)
    view = _view({}, {"prefill": 3, "decode": 1}, gauges={"prefill": _gauges(2, 1e6)})
    view = replace(view, observation=replace(view.observation, replicas={
        "prefill": ReplicaCounts(3, 2), "decode": ReplicaCounts(1, 1)}))  # fmt: skip
    counts, _ = dyn.decide(5.0, view, state)
    assert counts["prefill"] == 3


def test_llmd_prefill_replicas_are_seconds_of_prefill_work_over_the_ttft_budget() -> None:
    perf = profiles.resolve_all(SPEC)
    llmd = policies.LlmdPolicy(SPEC, perf)
    peak = 2048 / float(perf["prefill"].prefill.service_time_s(2048))
    budget = 0.65 * (SPEC.objectives.ttft.target.seconds - 2000.0 / peak)
    work_tokens = 5.0 * budget * peak  # five replicas' worth
    view = _view({}, {"prefill": 2, "decode": 2}, gauges={"prefill": _gauges(2, work_tokens), "decode": _gauges(2)})
    counts, state = llmd.decide(0.0, view, policies.LlmdState())
    assert counts["prefill"] == 3  # wants 5, but one pod per 180 s
    counts, _ = llmd.decide(200.0, replace(view, observation=replace(view.observation, replicas={
        "prefill": ReplicaCounts(3, 3), "decode": ReplicaCounts(2, 2)})), state)  # fmt: skip
    assert counts["prefill"] == 4


@pytest.mark.parametrize(
    ("kv", "ready", "expected"),
    [
        pytest.param(0.95, 4, 5, id="sum-of-kv-over-0.8-up-one"),
        pytest.param(0.82, 4, 4, id="within-tolerance"),
        pytest.param(0.3, 4, 4, id="down-waits-for-the-window"),
    ],
)
def test_llmd_decode_follows_kv_cache_use(kv: float, ready: int, expected: int) -> None:
    llmd = policies.LlmdPolicy(SPEC, profiles.resolve_all(SPEC))
    view = _view({}, {"prefill": 1, "decode": ready}, gauges={"prefill": _gauges(1), "decode": _gauges(ready, kv=kv)})
    state = policies.LlmdState(history=((0.0, {"decode": ready}),))
    counts, _ = llmd.decide(60.0, view, state)
    assert counts["decode"] == expected


def test_peak_minute_load() -> None:
    arrivals = np.concatenate([np.linspace(0, 59, 60), np.linspace(60, 119, 240)])
    load = policies.peak_minute_load(arrivals, np.full(300, 100), np.full(300, 10))
    assert load.rate_per_s == pytest.approx(4.0)
    assert load.isl_mean_tokens == 100.0 and load.isl_cv2 == 0.0
