"""Resolving a pool's replica performance: the examples, profile-over-roofline precedence, errors, overrides."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenscale.api import Hardware, InferencePoolSpec, PerformanceProfile
from tokenscale.manifests import load_pools
from tokenscale.planner import perf, presets, profiles
from tokenscale.planner.perf import ReplicaPerformance

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _spec(
    model: str = "meta-llama/Llama-3.1-70B-Instruct",
    *,
    pool: dict[str, Any] | None = None,
    **fields: Any,
) -> InferencePoolSpec:
    """An Aggregated spec on the wire format (camelCase), with the pool and spec fields given."""
    doc: dict[str, Any] = {
        "model": model,
        "mode": "Aggregated",
        "objectives": {"ttft": {"target": "1s"}, "tpot": {"target": "50ms"}},
        "metrics": {"prometheus": {"url": "http://prometheus:9090"}},
        "pools": {
            "aggregated": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 4, "gpusPerReplica": 4, **(pool or {})}
        },
        **fields,
    }
    return InferencePoolSpec.model_validate(doc)


def _roofline(gpu: str, model: str, tp: int) -> ReplicaPerformance:
    return perf.roofline_performance(presets.gpu_preset(gpu), presets.model_preset(model), tp)


# The fixed per-pass cost that is not a weight read: step overhead plus the tensor-parallel
# all-reduces' latency (Llama-3.1-70B at _spec's TP 4: 160 of them).
_FIXED_NON_WEIGHT_S = perf.STEP_OVERHEAD_S + 2 * 80 * perf.ALL_REDUCE_LATENCY_S
# The all-reduced activations per token at TP 4 on H100 NVLink: 2·80 · 2(3/4) · 8192·2 B at the bus
# bandwidth NCCL reaches, 0.75 of the 450 GB/s line rate.
_ALL_REDUCE_S_PER_TOKEN = 2 * 80 * 1.5 * 8192 * 2 / (0.75 * 450e9)


# --- the shipped examples ------------------------------------------------------------------------


def test_there_are_examples_to_resolve() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_resolves_with_positive_coefficients(path: Path) -> None:
    for loaded in load_pools(path):
        spec = loaded.pool.spec
        resolved = profiles.resolve_all(spec)
        assert set(resolved) == set(spec.active_pools())
        for role, replica in resolved.items():
            pool = spec.active_pools()[role]
            assert replica.prefill.a_s > 0 and replica.prefill.b_s_per_token > 0 and replica.prefill.c_s_per_token2 > 0
            assert replica.decode.alpha_s > 0 and replica.decode.beta_s > 0 and replica.decode.gamma_s_per_token > 0
            assert replica.kv_capacity_tokens > 0 and replica.kv_bytes_per_token > 0
            assert replica.max_batch == pool.max_batch_size
            # Without a profile, the replica is the roofline prior of its GPU and model.
            gpu = profiles.gpu_of(spec.hardware_of(role))
            shape = profiles.model_shape_of(spec)
            assert shape is not None
            assert replica == perf.roofline_performance(
                gpu, shape, pool.gpus_per_replica, max_batch=pool.max_batch_size
            )


def test_disaggregated_example_uses_each_pools_own_gpu() -> None:
    (loaded,) = load_pools(next(p for p in EXAMPLES if p.stem == "vllm-disaggregated-70b"))
    resolved = profiles.resolve_all(loaded.pool.spec)
    # prefill on 4×H100, decode on 4×H200: same compute, H200's 4.8 TB/s makes its decode faster.
    assert resolved["prefill"] == _roofline("H100", "Llama-3.1-70B", 4)
    assert resolved["decode"].decode == _roofline("H200", "Llama-3.1-70B", 4).decode
    assert resolved["decode"].decode.alpha_s < resolved["prefill"].decode.alpha_s


# --- profile over roofline -----------------------------------------------------------------------

DECODE_PROFILE = {"alphaSeconds": 0.02, "betaSeconds": 0.0001, "gammaSecondsPerToken": 1e-8}
PREFILL_PROFILE = {"aSeconds": 0.03, "bSecondsPerToken": 5e-5, "cSecondsPerToken2": 1e-9}


@pytest.mark.parametrize(
    ("profile", "from_profile"),
    [
        pytest.param({"decode": DECODE_PROFILE}, {"decode"}, id="decode-only"),
        pytest.param({"prefill": PREFILL_PROFILE}, {"prefill"}, id="prefill-only"),
        pytest.param({"kvCapacityTokens": 123456}, {"kv"}, id="kv-capacity-only"),
        pytest.param(
            {"prefill": PREFILL_PROFILE, "decode": DECODE_PROFILE, "kvCapacityTokens": 123456},
            {"prefill", "decode", "kv"},
            id="complete",
        ),
    ],
)
def test_inline_profile_overrides_the_roofline_coefficient_by_coefficient(
    profile: dict[str, Any], from_profile: set[str]
) -> None:
    spec = _spec(pool={"performance": {"profile": profile}})
    got = profiles.resolve(spec, "aggregated")
    roofline = _roofline("H100", "Llama-3.1-70B", 4)
    expected_decode = perf.DecodeModel(0.02, 0.0001, 1e-8) if "decode" in from_profile else roofline.decode
    expected_prefill = perf.PrefillModel(0.03, 5e-5, 1e-9) if "prefill" in from_profile else roofline.prefill
    assert got.decode == expected_decode
    assert got.prefill == expected_prefill
    assert got.kv_capacity_tokens == (123456.0 if "kv" in from_profile else roofline.kv_capacity_tokens)
    # What a profile cannot say still comes from the model shape.
    assert got.kv_bytes_per_token == 327680
    assert got.kv_transfer_s_per_token == roofline.kv_transfer_s_per_token


def test_loaded_profile_takes_precedence_over_the_inline_one() -> None:
    spec = _spec(pool={"performance": {"profile": {"decode": DECODE_PROFILE}}})
    loaded = PerformanceProfile.model_validate(
        {"decode": {"alphaSeconds": 0.03, "betaSeconds": 0.0002, "gammaSecondsPerToken": 2e-8}}
    )
    got = profiles.resolve(spec, "aggregated", loaded)
    assert got.decode == perf.DecodeModel(0.03, 0.0002, 2e-8)
    assert got.prefill == _roofline("H100", "Llama-3.1-70B", 4).prefill


def test_complete_profile_models_an_unknown_model_without_a_shape() -> None:
    profile = {"prefill": PREFILL_PROFILE, "decode": DECODE_PROFILE, "kvCapacityTokens": 50000}
    got = profiles.resolve(_spec("acme/secret-model", pool={"performance": {"profile": profile}}), "aggregated")
    assert got.decode == perf.DecodeModel(0.02, 0.0001, 1e-8)
    assert got.prefill == perf.PrefillModel(0.03, 5e-5, 1e-9)
    assert got.kv_capacity_tokens == 50000.0


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "must_mention"),
    [
        pytest.param(lambda: _spec("acme/secret-model"), ["spec.modelShape", "acme/secret-model"], id="unknown-model"),
        pytest.param(
            lambda: _spec("acme/secret-model", pool={"performance": {"profile": {"decode": DECODE_PROFILE}}}),
            ["spec.modelShape", "performance.profile"],
            id="unknown-model-partial-profile",
        ),
        pytest.param(
            lambda: _spec(hardware={"gpu": "TPUv5"}), ["TPUv5", *presets.GPU_PRESETS], id="unknown-gpu-lists-known"
        ),
        pytest.param(
            lambda: _spec(pool={"hardware": {"gpu": "MI300X"}}), ["MI300X", *presets.GPU_PRESETS], id="unknown-pool-gpu"
        ),
        pytest.param(
            lambda: _spec(modelShape={"preset": "Llama-9"}),
            ["spec.modelShape.preset", "Llama-9", *presets.MODEL_PRESETS],
            id="unknown-model-preset",
        ),
        pytest.param(
            lambda: _spec(pool={"gpusPerReplica": 1}), ["pools.aggregated", "gpusPerReplica"], id="does-not-fit"
        ),
        pytest.param(
            lambda: _spec("acme/custom", modelShape={"parametersBillions": 13, "kvHeads": 8, "headDim": 128}),
            ["spec.modelShape", "layers"],
            id="custom-shape-missing-layers",
        ),
        # The message should name fields as the manifest spells them (camelCase).
        pytest.param(
            lambda: _spec("acme/custom", modelShape={"parametersBillions": 13, "layers": 40}),
            ["spec.modelShape", "kvHeads", "headDim"],
            id="custom-shape-missing-heads-camelcase",
        ),
    ],
)
def test_underspecified_spec_raises_profile_error_saying_what_to_add(
    build: Callable[[], InferencePoolSpec], must_mention: list[str]
) -> None:
    spec = build()
    with pytest.raises(profiles.ProfileError) as info:
        profiles.resolve_all(spec)
    message = str(info.value)
    for text in must_mention:
        assert text in message


# --- hardware overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hardware", "coefficient", "ratio"),
    [
        # γ = kv_bytes / (TP·B·f_b): half the bandwidth, twice γ.
        pytest.param({"hbmGBps": 1675}, lambda r: r.decode.gamma_s_per_token, 2.0, id="half-bandwidth-doubles-gamma"),
        pytest.param({"hbmGBps": 6700}, lambda r: r.decode.gamma_s_per_token, 0.5, id="double-bandwidth-halves-gamma"),
        pytest.param(
            {"hbmGBps": 1675},
            lambda r: r.decode.alpha_s - _FIXED_NON_WEIGHT_S,
            2.0,
            id="half-bandwidth-doubles-weight-read",
        ),
        # b = 2A/(TP·F·f_c) + all-reduce per token: half the compute, twice the GEMM part of b.
        pytest.param(
            {"peakTFLOPS": 494.5},
            lambda r: r.prefill.b_s_per_token - _ALL_REDUCE_S_PER_TOKEN,
            2.0,
            id="half-compute-doubles-b",
        ),
        # Half the NVLink bandwidth, twice the all-reduce part of b.
        pytest.param(
            {"interconnectGBps": 225},
            lambda r: r.prefill.b_s_per_token - 2 * 70.6e9 / (4 * 989e12 * perf.ACHIEVABLE_COMPUTE_FRACTION["bf16"]),
            2.0,
            id="half-nvlink-doubles-all-reduce-per-token",
        ),
        pytest.param({"peakTFLOPS": 494.5}, lambda r: r.decode.gamma_s_per_token, 1.0, id="compute-leaves-gamma"),
        pytest.param(
            {"kvTransferGBps": 25}, lambda r: r.kv_transfer_s_per_token, 2.0, id="half-network-doubles-transfer"
        ),
        pytest.param({"memoryGiB": 80}, lambda r: r.kv_capacity_tokens, 1.0, id="same-memory-same-capacity"),
    ],
)
def test_hardware_overrides_change_the_coefficients_they_drive(
    hardware: dict[str, float], coefficient: Callable[[ReplicaPerformance], float], ratio: float
) -> None:
    base = profiles.resolve(_spec(hardware={"gpu": "H100"}), "aggregated")
    overridden = profiles.resolve(_spec(hardware={"gpu": "H100", **hardware}), "aggregated")
    assert coefficient(overridden) == pytest.approx(coefficient(base) * ratio, rel=1e-9)


def test_more_memory_holds_more_kv() -> None:
    base = profiles.resolve(_spec(), "aggregated")
    bigger = profiles.resolve(_spec(hardware={"memoryGiB": 160}), "aggregated")
    # free = TP·mem·0.9·0.95 − weights; the extra 80 GiB per GPU is all KV.
    extra_tokens = 4 * 80 * 2**30 * 0.9 * 0.95 / 327680
    assert bigger.kv_capacity_tokens == pytest.approx(base.kv_capacity_tokens + extra_tokens, rel=1e-9)


def test_unknown_gpu_message_names_override_fields_the_schema_accepts() -> None:
    with pytest.raises(profiles.ProfileError) as info:
        profiles.resolve(_spec(hardware={"gpu": "TPUv5"}), "aggregated")
    hint = re.search(r"or give ([A-Za-z/]+)", str(info.value))
    assert hint is not None
    for field in hint.group(1).split("/"):
        # Each field the message suggests must be a valid key of spec.hardware.
        Hardware.model_validate({"gpu": "TPUv5", field: 1.0})


def test_pool_hardware_overrides_spec_hardware() -> None:
    spec = _spec(hardware={"gpu": "H100"}, pool={"hardware": {"gpu": "H200"}})
    assert profiles.resolve(spec, "aggregated") == _roofline("H200", "Llama-3.1-70B", 4)


@pytest.mark.parametrize(
    ("hbm_gb_per_s"),
    [pytest.param(1000.0, id="1000GBps"), pytest.param(3350.0, id="3350GBps"), pytest.param(8000.0, id="8000GBps")],
)
def test_gamma_is_inversely_proportional_to_bandwidth(hbm_gb_per_s: float) -> None:
    got = profiles.resolve(_spec(hardware={"gpu": "H100", "hbmGBps": hbm_gb_per_s}), "aggregated")
    assert got.decode.gamma_s_per_token * hbm_gb_per_s == pytest.approx(
        327680 / (4 * 1e9 * perf.ACHIEVABLE_BANDWIDTH_FRACTION), rel=1e-9
    )


# --- model shapes ------------------------------------------------------------------------------------


def test_explicit_shape_without_preset_matches_the_equivalent_preset() -> None:
    shape = {"parametersBillions": 70.6, "layers": 80, "kvHeads": 8, "headDim": 128}
    custom = profiles.resolve(_spec("acme/custom-70b", modelShape=shape), "aggregated")
    assert custom == _roofline("H100", "Llama-3.1-70B", 4)


def test_explicit_moe_shape_reads_only_active_parameters_per_step() -> None:
    shape = {"parametersBillions": 46.7, "activeParametersBillions": 12.9, "layers": 32, "kvHeads": 8, "headDim": 128}
    dense = {"parametersBillions": 46.7, "layers": 32, "kvHeads": 8, "headDim": 128}
    moe = profiles.resolve(_spec("acme/moe", modelShape=shape), "aggregated")
    same_size = profiles.resolve(_spec("acme/dense", modelShape=dense), "aggregated")
    # Every expert's weights are read once the batch spreads over them (perf.roofline_performance):
    # the fixed step cost equals the dense model's, the per-sequence compute is the active share.
    assert moe.decode.alpha_s == pytest.approx(same_size.decode.alpha_s)
    assert moe.decode.beta_s < same_size.decode.beta_s
    assert moe.kv_capacity_tokens == pytest.approx(same_size.kv_capacity_tokens)


@pytest.mark.parametrize(
    ("model_shape"),
    [
        pytest.param({"preset": "Llama-3.1-70B", "bytesPerParameter": 1}, id="preset-fp8-weights"),
        # Same model, preset inferred from spec.model, FP8 weights: must not be silently ignored.
        pytest.param({"bytesPerParameter": 1}, id="inferred-preset-fp8-weights"),
    ],
)
def test_fp8_weights_halve_the_weight_read(model_shape: dict[str, Any]) -> None:
    bf16 = profiles.resolve(_spec(), "aggregated")
    fp8 = profiles.resolve(_spec(modelShape=model_shape), "aggregated")
    assert fp8.decode.alpha_s - _FIXED_NON_WEIGHT_S == pytest.approx((bf16.decode.alpha_s - _FIXED_NON_WEIGHT_S) / 2)
    assert fp8.kv_capacity_tokens > bf16.kv_capacity_tokens


@pytest.mark.parametrize(
    ("model_shape"),
    [
        pytest.param({"preset": "Llama-3.1-70B", "kvBytesPerValue": 1}, id="preset-fp8-kv"),
        pytest.param({"kvBytesPerValue": 1}, id="inferred-preset-fp8-kv"),
    ],
)
def test_fp8_kv_cache_halves_gamma(model_shape: dict[str, Any]) -> None:
    bf16 = profiles.resolve(_spec(), "aggregated")
    fp8 = profiles.resolve(_spec(modelShape=model_shape), "aggregated")
    assert fp8.kv_bytes_per_token == 163840
    assert fp8.decode.gamma_s_per_token == pytest.approx(bf16.decode.gamma_s_per_token / 2)


def test_model_shape_preset_wins_over_the_served_name() -> None:
    spec = _spec("meta-llama/Llama-3.1-70B-Instruct", modelShape={"preset": "Llama-3.1-8B"}, pool={"gpusPerReplica": 1})
    assert profiles.resolve(spec, "aggregated") == _roofline("H100", "Llama-3.1-8B", 1)


# --- precision (issue 16) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_shape", "bytes_per_parameter", "kv_bytes_per_value", "precision"),
    [
        pytest.param({}, 2.0, 2.0, "bf16", id="default-bf16"),
        pytest.param({"precision": "fp8"}, 1.0, 1.0, "fp8", id="fp8-sets-weights-and-kv"),
        # vLLM serving an FP8 checkpoint without --kv-cache-dtype fp8 keeps a BF16 KV cache.
        pytest.param({"precision": "fp8", "kvBytesPerValue": 2}, 1.0, 2.0, "fp8", id="fp8-with-bf16-kv"),
        pytest.param({"preset": "Llama-3.1-70B", "precision": "fp8"}, 1.0, 1.0, "fp8", id="preset-fp8"),
        # Byte counts alone (the fields before issue 16) keep BF16 math: weight-only FP8.
        pytest.param({"bytesPerParameter": 1}, 1.0, 2.0, "bf16", id="bytes-only-is-weight-only"),
    ],
)
def test_precision_sets_bytes_and_compute_peak(
    model_shape: dict[str, Any], bytes_per_parameter: float, kv_bytes_per_value: float, precision: str
) -> None:
    spec = _spec(modelShape=model_shape)
    shape = profiles.model_shape_of(spec)
    assert shape is not None
    assert (shape.bytes_per_parameter, shape.kv_bytes_per_value, shape.precision) == (
        bytes_per_parameter,
        kv_bytes_per_value,
        precision,
    )
    resolved = profiles.resolve(spec, "aggregated")
    gemm_s = 2 * 70.6e9 / (4 * presets.gpu_preset("H100").peak_tflops(shape.precision) * 1e12)
    gemm_s /= perf.ACHIEVABLE_COMPUTE_FRACTION[shape.precision]
    assert resolved.prefill.b_s_per_token == pytest.approx(gemm_s + _ALL_REDUCE_S_PER_TOKEN)


def test_fp8_pool_prefills_faster_than_bf16() -> None:
    bf16 = profiles.resolve(_spec(), "aggregated")
    fp8 = profiles.resolve(_spec(modelShape={"precision": "fp8"}), "aggregated")
    assert fp8.prefill.service_time_s(4096) < 0.7 * bf16.prefill.service_time_s(4096)


def test_unknown_precision_is_rejected_by_the_schema() -> None:
    with pytest.raises(ValueError, match="precision"):
        _spec(modelShape={"precision": "int4"})
