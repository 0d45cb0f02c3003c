"""The simulator's vLLM exporter against a real vLLM's `/metrics`, so the imitation cannot drift.

For every family `sim.engine_metrics.render` writes with `engine="vllm"` (prefill, decode and aggregated
pools), the real engine (tests/harness/engine.py, vLLM 0.32 on the CPU) must expose a family of the
same name and type; every label the exporter sets must be one the engine sets; and a histogram's
bucket bounds must be the engine's. The presets (`metrics.presets`) read these names, so a preset
checked against the exporter is then checked against the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from harness.engine import VllmServer, replay
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tokenscale import manifests
from tokenscale.metrics import presets
from tokenscale.planner import profiles
from tokenscale.sim import engine_metrics, loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.workload import make_workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _labels(family: Metric) -> set[str]:
    return {k for s in family.samples for k in s.labels if k != "le"}


def _bounds(family: Metric) -> set[float]:
    return {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}


def _simulated(role: str, max_model_len: int) -> dict[str, Metric]:
    """One scrape of a small simulated fleet of `role`'s mode, exported with vLLM's names."""
    rng = np.random.default_rng(0)
    n = 40
    w = make_workload("probe", np.sort(rng.uniform(0, 20, n)), rng.integers(20, 400, n), rng.integers(5, 40, n))
    example = "vllm-aggregated-8b.yaml" if role == "aggregated" else "vllm-disaggregated-70b.yaml"
    spec = manifests.load_one_pool(EXAMPLES / example).pool.spec
    prior = profiles.resolve_all(spec)
    setup = loop.SimSetup(spec, w, prior, prior, 0.0)
    config = loop.fleet_config(setup, {r: 1 for r in spec.active_pools()}, cold_start=False)
    # The engine under test runs with a shorter max-model-len; vLLM's length buckets end there.
    fleet = Fleet(w, replace(config, max_model_len_tokens=max_model_len), rng)
    return _families(engine_metrics.render(fleet.snapshot(30.0), role, "vllm", "m").decode())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine_families(vllm_engine: VllmServer) -> dict[str, Metric]:
    # A few finished requests, so every histogram has observations (the families exist from start-up).
    replay(vllm_engine, [0.0, 0.2, 0.4], [50, 300, 1200], [8, 16, 4])
    return _families(vllm_engine.metrics_text())


def _pairs(role: str, engine: dict[str, Metric], max_model_len: int) -> Iterable[tuple[Metric, Metric | None]]:
    for name, ours in _simulated(role, max_model_len).items():
        yield ours, engine.get(name)


@pytest.mark.parametrize("role", ["prefill", "decode", "aggregated"])
def test_every_exported_family_is_the_engines(
    engine_families: dict[str, Metric], vllm_engine: VllmServer, role: str
) -> None:
    problems = []
    checked = 0
    for ours, theirs in _pairs(role, engine_families, vllm_engine.max_model_len):
        checked += 1
        if theirs is None:
            problems.append(f"{ours.name}: the engine has no such family")
            continue
        if ours.type != theirs.type:
            problems.append(f"{ours.name}: type {ours.type}, the engine's is {theirs.type}")
        extra = _labels(ours) - _labels(theirs)
        if extra:
            problems.append(f"{ours.name}: labels {sorted(extra)} the engine does not set")
        if ours.type == "histogram" and _bounds(ours) != _bounds(theirs):
            problems.append(f"{ours.name}: buckets {sorted(_bounds(ours))} vs the engine's {sorted(_bounds(theirs))}")
    assert problems == []
    assert checked >= {"prefill": 6, "decode": 10, "aggregated": 12}[role]


def test_every_name_the_vllm_preset_reads_is_served_by_the_engine(engine_families: dict[str, Metric]) -> None:
    preset = presets.PRESETS["vllm"]
    # Each signal lists its names newest first; the first must be the engine's (older ones are fallbacks).
    wanted = [
        preset.finished_requests,
        preset.running,
        preset.waiting,
        preset.ttft[0],
        preset.tpot[0],
        preset.isl.histogram,
        preset.osl.histogram,
        preset.prefill_time,
        preset.kv_usage[0],
    ]
    served = set(engine_families)
    missing = [n for n in wanted if n is not None and n.removesuffix("_total") not in served]
    assert missing == []
