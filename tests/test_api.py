"""The API models: durations, defaults that make a minimal pool work, and clear rejections."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tokenscale import api

MINIMAL: dict[str, Any] = {
    "apiVersion": "tokenscale.dev/v1alpha1",
    "kind": "InferencePool",
    "metadata": {"name": "m"},
    "spec": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "mode": "Aggregated",
        "objectives": {"ttft": {"target": "500ms"}, "tpot": {"target": "50ms"}},
        "metrics": {"prometheus": {"url": "http://prometheus:9090"}},
        "pools": {"aggregated": {"scaleTargetRef": {"name": "llama"}, "maxReplicas": 4}},
    },
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("3m", 180.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("0s", 0.0, id="zero-parses"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert api.parse_duration_s(text) == pytest.approx(seconds)
    assert api.Duration(text).seconds == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 ms", "-1s", "1d", "ms", "1.s"], ids=lambda t: repr(t))
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        api.parse_duration_s(text)


@pytest.mark.parametrize("seconds", [0.05, 0.5, 1.0, 30.0, 90.0, 180.0, 3600.0, 5400.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert api.parse_duration_s(api.format_duration(seconds)) == pytest.approx(seconds)


def test_minimal_pool_gets_working_defaults() -> None:
    pool = api.InferencePool.model_validate(MINIMAL)
    spec = pool.spec
    agg = spec.active_pools()["aggregated"]
    assert (agg.min_replicas, agg.max_replicas, agg.gpus_per_replica) == (1, 4, 1)
    assert agg.scale_target_ref.kind == "Deployment" and agg.scale_target_ref.api_version == "apps/v1"
    assert spec.objectives.ttft.quantile == 0.9 and spec.objectives.ttft.target.seconds == 0.5
    assert spec.interval.seconds == 30.0 and spec.forecast.cold_start.seconds == 180.0
    assert spec.metrics.engine == "vllm" and spec.metrics.window.seconds == 120.0
    assert spec.behavior.scale_down_window_s == 300.0 and spec.behavior.scale_up_window_s == 0.0
    assert spec.hardware_of("aggregated").gpu == "H100"
    assert not spec.dry_run and not spec.paused


def test_round_trip_keeps_camel_case_and_duration_text() -> None:
    pool = api.InferencePool.model_validate(MINIMAL)
    dumped = pool.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["spec"]["objectives"]["ttft"]["target"] == "500ms"
    assert dumped["spec"]["pools"]["aggregated"]["scaleTargetRef"]["apiVersion"] == "apps/v1"
    assert api.InferencePool.model_validate(dumped) == pool


def _with(path: str, value: Any) -> dict[str, Any]:
    import copy

    doc = copy.deepcopy(MINIMAL)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "where", "why"),
    [
        pytest.param(_with("spec.mode", "Hybrid"), "mode", "Disaggregated", id="unknown-mode"),
        pytest.param(
            _with("spec.pools", {"aggregated": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 2, "minReplicas": 3}}),
            "aggregated",
            "minReplicas (3) must be less than or equal to maxReplicas (2)",
            id="min-gt-max",
        ),
        pytest.param(
            _with("spec.objectives", {"ttft": {"target": "1s"}, "tpot": {"target": "50ms", "quantile": 1}}),
            "tpot.quantile",
            "less than 1",
            id="quantile-one",
        ),
        pytest.param(_with("spec.interval", "0s"), "spec", "interval must be a positive", id="zero-interval"),
        pytest.param(_with("spec.gpuBudget", 0), "gpuBudget", "greater than or equal to 1", id="zero-budget"),
        pytest.param(
            _with("spec.mode", "Disaggregated"),
            "spec",
            "needs pools.prefill and pools.decode",
            id="mode-without-its-pools",
        ),
        pytest.param(_with("spec.replicas", 3), "replicas", "Extra inputs", id="unknown-field"),
    ],
)
def test_invalid_pools_say_where_and_why(doc: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.InferencePool.model_validate(doc)
    text = str(info.value)
    assert where in text and why in text
