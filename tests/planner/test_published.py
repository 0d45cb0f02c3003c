"""The roofline prior against published serving measurements (issue 16; the table is `published.py`).

Each row's prediction must fall within the row's tolerance of the published figure, and per kind
(prefill, decode, throughput) the geometric mean of prediction / published must lie in 0.9–1.1, so
the prior is neither optimistic nor pessimistic on average. aggregated_ttft rows are predicted by
the planner's own aggregated sizing at the published load, so they check the queueing model and the
prior together; each must meet its tolerance, but their geometric mean (0.897 over SGLang 0.3's four
rows: 1.02–1.03 for the 8B on A100, 0.78–0.79 for the 70B at TP4 on H100) is a known miss of
0.9–1.1, held by a test that fails once it fits (published.py's module docstring says why the 70B
rows are not a cost the prior leaves out). The same document's vLLM v0.6.0 rows, run with multi-step
scheduling (0.22–0.33×; a mode vLLM has since removed), are kept beside the table (`MULTI_STEP`) and
must stay outside their tolerance, so a prior that starts charging that wait shows. The prior's
all-reduce time is held against NCCL's published all-reduce figures at the message sizes of a
prefill pass, and those of a decode step as stated misses (`ALL_REDUCE_BUS_BANDWIDTH`). Run with
`-s` to print the ratios.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tokenscale.planner import perf, presets, sizing

sys.path.insert(0, str(Path(__file__).parent))  # the test-only helper modules beside this file
from published import ALL_REDUCE_BUS_BANDWIDTH, MULTI_STEP, PUBLISHED, AllReduceBusBandwidth, Published  # noqa: E402

# trtllm-bench's offline runs: the engine's batch goes to the thousands (its CUDA-graph batch list
# reaches 8192) and the KV cache takes 0.90–0.95 of free memory (perf-overview.md).
OFFLINE_MAX_BATCH = 2048
OFFLINE_MEMORY_UTILIZATION = 0.95


def replica(row: Published, *, max_batch: int = 256, memory_utilization: float = 0.9) -> perf.ReplicaPerformance:
    """The prior's replica for a row's GPU, model, precision and tensor-parallel degree."""
    shape = presets.with_precision(row.model, row.precision)
    return perf.roofline_performance(
        presets.gpu_preset(row.gpu),
        shape,
        row.tp,
        max_batch=max_batch,
        memory_utilization=memory_utilization,
    )


def predict(row: Published) -> float:
    """The prior's figure for a row, in the row's unit."""
    if row.measure == "ttft":
        # The prefill pass itself emits the first token (TensorRT-LLM measured it with one output
        # token; a single stream never waits).
        return float(replica(row).prefill.service_time_s(row.isl))
    if row.measure == "itl":
        return float(replica(row).decode.step_time_s(1, row.isl + row.osl / 2))
    if row.measure == "batch_e2e":
        r = replica(row)
        # One prefill pass over the batch's prompts, then OSL − 1 decode steps of the whole batch.
        prompt_s = r.prefill.a_s + row.batch * (
            r.prefill.b_s_per_token * row.isl + r.prefill.c_s_per_token2 * row.isl**2
        )
        steps_s = (row.osl - 1) * float(r.decode.step_time_s(row.batch, row.isl + row.osl / 2))
        return float(prompt_s + steps_s)
    if row.measure == "median_ttft_under_load":
        return median_ttft_under_load(row)
    r = replica(row, max_batch=OFFLINE_MAX_BATCH, memory_utilization=OFFLINE_MEMORY_UTILIZATION)
    return perf.saturated_output_tokens_per_s(r, row.isl, row.osl)


def median_ttft_under_load(row: Published) -> float:
    """`sizing.aggregated_sizing`'s median TTFT of one replica at the row's Poisson load (no objective binds)."""
    load = sizing.Load(row.rate_per_s, row.isl, row.osl, row.length_cv2, row.length_cv2)
    sized = sizing.aggregated_sizing(np.array([1]), load, replica(row), 0.5, math.inf, 0.5, math.inf, row.chunk_tokens)
    return float(sized.ttft_s[0])


def test_the_table_has_enough_rows_of_every_kind() -> None:
    kinds: defaultdict[str, int] = defaultdict(int)
    for row in PUBLISHED:
        kinds[row.kind] += 1
    assert len(PUBLISHED) >= 20
    assert all(kinds[kind] >= 6 for kind in ("prefill", "decode", "throughput")), dict(kinds)
    assert kinds["aggregated_ttft"] >= 4, dict(kinds)
    assert len({row.id for row in PUBLISHED}) == len(PUBLISHED)
    for row in PUBLISHED:
        assert row.tolerance in (0.15, 0.25)
        assert row.why and row.source


@pytest.mark.parametrize("row", PUBLISHED, ids=lambda r: r.id)
def test_prior_is_within_the_row_tolerance(row: Published) -> None:
    ratio = predict(row) / row.value
    print(f"{row.id}: predicted {predict(row):.4g}, published {row.value:.4g}, ratio {ratio:.3f}")
    assert 1.0 - row.tolerance <= ratio <= 1.0 + row.tolerance, (
        f"{row.id}: predicted {predict(row):.4g}, published {row.value:.4g} (ratio {ratio:.2f}, ±{row.tolerance:.0%})"
    )


@pytest.mark.parametrize("row", MULTI_STEP, ids=lambda r: r.id)
def test_multi_step_scheduling_rows_stay_outside_the_prior(row: Published) -> None:
    # vLLM 0.6's --num-scheduler-steps 10 holds a new prompt until a 10-step run ends, a wait the prior
    # does not charge (0.22–0.33×). This fails once it meets the row, which then belongs in the table.
    ratio = predict(row) / row.value
    print(f"{row.id}: predicted {predict(row):.4g}, published {row.value:.4g}, ratio {ratio:.3f}")
    assert not 1.0 - row.tolerance <= ratio <= 1.0 + row.tolerance, f"{row.id} now fits (ratio {ratio:.2f})"


def geometric_mean_ratio(kind: str) -> float:
    """exp(mean(log(predicted / published))) over the table's rows of `kind`."""
    rows = [row for row in PUBLISHED if row.kind == kind]
    gmean = math.exp(sum(math.log(predict(row) / row.value) for row in rows) / len(rows))
    print(f"{kind}: geometric-mean ratio {gmean:.3f} over {len(rows)} rows")
    return gmean


@pytest.mark.parametrize("kind", ["prefill", "decode", "throughput"])
def test_geometric_mean_ratio_per_kind_is_unbiased(kind: str) -> None:
    gmean = geometric_mean_ratio(kind)
    assert 0.9 <= gmean <= 1.1, f"{kind}: geometric-mean ratio {gmean:.3f}"


def test_aggregated_ttft_geometric_mean_is_a_known_miss_until_it_fits() -> None:
    # Expected miss: the two SGLang 70B TP4 rows (0.78–0.79) hold the kind just under 0.9. Their first
    # tokens imply twice the per-step tensor-parallel cost that the same run's published ITL does, and
    # 1.5–3× what current engines' TP rows imply, so no cost in the prior closes it without pushing
    # those rows out (published.py's module docstring gives the figures). When this fails because the
    # mean reached 0.9, hold aggregated_ttft in the test above instead.
    gmean = geometric_mean_ratio("aggregated_ttft")
    assert 0.85 <= gmean < 0.9, f"aggregated_ttft: geometric-mean ratio {gmean:.3f}"


def all_reduce_time_s(row: AllReduceBusBandwidth) -> float:
    """The prior's seconds for one all-reduce of the row's size on its GPUs (`perf.tensor_parallel_cost`)."""
    model = presets.model_preset("Llama-3.1-70B")
    per_pass_s, per_token_s = perf.tensor_parallel_cost(presets.gpu_preset(row.gpu), model, row.gpus)
    all_reduces = 2 * model.layers
    tokens = row.size_bytes / (model.hidden * perf.ACTIVATION_BYTES)
    return (per_pass_s + per_token_s * tokens) / all_reduces


ALL_REDUCE_TOLERANCE = 0.25


@pytest.mark.parametrize("row", ALL_REDUCE_BUS_BANDWIDTH, ids=lambda r: r.id)
def test_all_reduce_time_is_within_tolerance_of_nccl_tests(row: AllReduceBusBandwidth) -> None:
    prior_s = all_reduce_time_s(row)
    ratio = prior_s / row.time_s
    print(f"{row.id}: prior {prior_s * 1e6:.1f} µs, published {row.time_s * 1e6:.1f} µs, ratio {ratio:.3f}")
    within = 1.0 - ALL_REDUCE_TOLERANCE <= ratio <= 1.0 + ALL_REDUCE_TOLERANCE
    if row.expected_miss:
        # A known miss stays visible: this fails once the prior meets the row, so the marker goes.
        assert not within, f"{row.id} now fits (ratio {ratio:.2f}); drop its expected_miss"
    else:
        assert within, f"{row.id}: ratio {ratio:.2f} (±{ALL_REDUCE_TOLERANCE:.0%})"
