"""The fidelity report: the planner's model against the simulated fleet, window by window."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tokenscale import manifests
from tokenscale.cli.simulate import simulated_truth
from tokenscale.planner import profiles
from tokenscale.sim import fidelity, loop, traces, workload

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT.parent / "shared" / "traces" / "azure-2023-conv.csv"


def _pool32() -> manifests.LoadedPool:
    # The 70B example with room (32 + 32 replicas) for ×5 the Azure load.
    return manifests.load_one_pool(ROOT / "bench" / "pools" / "conversation-70b.yaml")


@pytest.mark.parametrize("rate_scale", [pytest.param(5.0, id="azure-x5")])
def test_closed_loop_model_is_within_the_fidelity_targets_on_the_azure_trace(rate_scale: float) -> None:
    # Splitwise (Patel et al., ISCA 2024) conversation trace. Targets (issue 12): median |error| ≤ 10%
    # for p90 TTFT and p90 TPOT, no window more than 20% optimistic. The open-loop model is reported
    # beside it; the first window, before any fit, is allowed to be pessimistic.
    spec = _pool32().pool.spec
    prior = profiles.resolve_all(spec)
    w = workload.rate_scale(traces.read_trace(AZURE), rate_scale, np.random.default_rng(7))
    setup = loop.SimSetup(spec, w, prior, simulated_truth(prior, 0.25), 0.0, seed=7)
    result = fidelity.measure(setup, {"prefill": 8, "decode": 2})
    summary = result.summary()
    assert summary["windows"] == 12
    for key in ("ttft", "tpot"):
        assert summary[key]["median_abs_error"] <= 0.10, (key, summary[key])
        assert summary[key]["worst_optimistic_error"] >= -0.20, (key, summary[key])
    # Without the tail fit the model is off by more (either way) in some window.
    assert max(abs(x.ttft_open_loop_error) for x in result.windows) > 0.2


def test_windows_without_requests_are_skipped_and_errors_are_finite() -> None:
    spec = _pool32().pool.spec
    prior = profiles.resolve_all(spec)
    rng = np.random.default_rng(1)
    times = np.concatenate((rng.uniform(0, 300, 600), rng.uniform(900, 1200, 600)))
    w = workload.make_workload("gap", times, rng.integers(200, 3000, 1200), rng.integers(20, 300, 1200))
    setup = loop.SimSetup(spec, w, prior, prior, 0.0, seed=1)
    result = fidelity.measure(setup, {"prefill": 2, "decode": 2})
    assert [x.start_s for x in result.windows] == [0.0, 900.0]
    assert all(math.isfinite(x.ttft_error) and math.isfinite(x.tpot_error) for x in result.windows)


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregated_ttft_is_within_fifteen_percent_of_the_simulated_fleet_per_window(seed: int) -> None:
    # Issue 16: the aggregated model charged a prompt only its share of a chunk's step and was 16%
    # optimistic in the median window (31% in the worst) on this example; it now charges every step
    # the prompt rides in. The model is given the fleet's true performance, so this measures the
    # chunked-prefill TTFT model itself (open loop: no tail fit exists for the aggregated pool).
    # Held at the objective's p90 and at the median: seeds 0–3 at two replicas gave p90 within
    # −2…+5% in the median window (worst −11%) and the median −4…−7% (worst −17%). Per-request TPOT
    # at the mean rate was 28% and 37% optimistic in the busiest windows of seeds 0 and 1 (the rate's
    # c² across 15-s bins 0.03–0.09); over the rate's spread (`tpot.modulated_request_tpot_quantile_s`)
    # 10% and 23%.
    spec = manifests.load_one_pool(ROOT / "examples" / "vllm-aggregated-8b.yaml").pool.spec
    prior = profiles.resolve_all(spec)
    w = workload.default_synthetic_workload(seed)
    setup = loop.SimSetup(spec, w, prior, simulated_truth(prior, 0.25), 0.0, seed=seed)
    result = fidelity.measure(setup, {"aggregated": 2})
    summary = result.summary()
    assert summary["windows"] >= 6
    for key in ("ttft_open_loop", "ttft_median"):
        assert summary[key]["median_abs_error"] <= 0.15, (key, summary[key])
        assert summary[key]["worst_optimistic_error"] >= -0.20, (key, summary[key])
    assert all(x.ttft_median_simulated_s < x.ttft_simulated_s for x in result.windows)
    assert summary["tpot"]["median_abs_error"] <= 0.05, summary["tpot"]
    assert summary["tpot"]["worst_optimistic_error"] >= -0.25, summary["tpot"]
