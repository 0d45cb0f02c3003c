"""GPU and model presets: dense BF16 datasheet figures, KV bytes per token, name lookups and inference."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tokenscale.api import Precision
from tokenscale.planner import presets


@pytest.mark.parametrize(
    ("name", "dense_tflops", "hbm_gb_per_s", "memory_gib"),
    [
        # Vendor datasheets, dense BF16 tensor-core figures (the headline "with sparsity" is 2×).
        pytest.param("H100", 989.0, 3350.0, 80.0, id="h100-sxm-989-dense-3.35tbs"),
        pytest.param("H200", 989.0, 4800.0, 141.0, id="h200-same-compute-4.8tbs"),
        pytest.param("B200", 2250.0, 8000.0, 180.0, id="b200-2.25pflops-dense-8tbs"),
        pytest.param("A100", 312.0, 2039.0, 80.0, id="a100-80gb-312-dense"),
        # 48 GB of GDDR6 less the 1/16 that ECC reserves.
        pytest.param("L40S", 362.0, 864.0, 45.0, id="l40s-362-dense-gddr6-ecc"),
    ],
)
def test_gpu_preset_carries_the_dense_datasheet_figures(
    name: str, dense_tflops: float, hbm_gb_per_s: float, memory_gib: float
) -> None:
    gpu = presets.gpu_preset(name)
    assert gpu.name == name
    assert gpu.peak_dense_tflops == pytest.approx(dense_tflops, rel=0.01)
    assert gpu.hbm_gb_per_s == pytest.approx(hbm_gb_per_s, rel=0.01)
    assert gpu.memory_gib == pytest.approx(memory_gib, rel=0.01)


@pytest.mark.parametrize("name", list(presets.GPU_PRESETS), ids=lambda n: f"plausible-{n}")
def test_every_gpu_preset_is_in_a_plausible_range(name: str) -> None:
    gpu = presets.GPU_PRESETS[name]
    # Dense BF16 of data-centre GPUs from Ampere to Blackwell: 300..2500 TFLOPS; a sparse figure
    # (twice the dense one) would push B200 to 4500 and H100 to 1979.
    assert 300.0 <= gpu.peak_dense_tflops <= 2500.0
    assert 800.0 <= gpu.hbm_gb_per_s <= 8000.0
    assert 40.0 <= gpu.memory_gib <= 200.0
    assert 10.0 <= gpu.kv_transfer_gb_per_s <= 200.0
    # Arithmetic intensity at the ridge point (FLOP per byte) of every such GPU is 100..500.
    assert 100.0 <= gpu.peak_dense_tflops * 1e12 / (gpu.hbm_gb_per_s * 1e9) <= 500.0


def test_h100_and_h200_differ_only_in_memory() -> None:
    h100, h200 = presets.gpu_preset("H100"), presets.gpu_preset("H200")
    assert h100.peak_dense_tflops == h200.peak_dense_tflops
    assert h200.hbm_gb_per_s > h100.hbm_gb_per_s
    assert h200.memory_gib > h100.memory_gib


@pytest.mark.parametrize(
    ("name", "kv_bytes_per_token"),
    [
        # 2 (K and V) · layers · kv_heads · head_dim · 2 bytes (BF16).
        pytest.param("Llama-3.1-8B", 2 * 32 * 8 * 128 * 2, id="llama-8b-131072"),
        pytest.param("Llama-3.1-70B", 2 * 80 * 8 * 128 * 2, id="llama-70b-327680"),
        pytest.param("Qwen2.5-72B", 2 * 80 * 8 * 128 * 2, id="qwen-72b-327680"),
        pytest.param("Mixtral-8x7B", 2 * 32 * 8 * 128 * 2, id="mixtral-131072"),
        pytest.param("Qwen3-30B-A3B", 2 * 48 * 4 * 128 * 2, id="qwen3-moe-98304"),
        pytest.param("Qwen3-32B", 2 * 64 * 8 * 128 * 2, id="qwen3-32b-262144"),
        pytest.param("Qwen3-235B-A22B", 2 * 94 * 4 * 128 * 2, id="qwen3-235b-192512"),
    ],
)
def test_kv_bytes_per_token_is_two_layers_heads_dim_bytes(name: str, kv_bytes_per_token: int) -> None:
    assert presets.model_preset(name).kv_bytes_per_token == kv_bytes_per_token


def test_kv_bytes_of_the_llama_models_are_the_published_figures() -> None:
    assert presets.model_preset("Llama-3.1-8B").kv_bytes_per_token == 131072
    assert presets.model_preset("Llama-3.1-70B").kv_bytes_per_token == 327680


def test_fp8_kv_cache_halves_kv_bytes() -> None:
    shape = presets.ModelArchitecture("x", 8.0, 8.0, 32, 8, 128, 4096, kv_bytes_per_value=1.0)
    assert shape.kv_bytes_per_token == 65536


@pytest.mark.parametrize("name", list(presets.MODEL_PRESETS), ids=lambda n: f"consistent-{n}")
def test_every_model_preset_is_consistent(name: str) -> None:
    shape = presets.MODEL_PRESETS[name]
    assert shape.name == name
    assert 0 < shape.active_parameters_b <= shape.parameters_b
    assert shape.layers > 0 and shape.kv_heads > 0 and shape.head_dim > 0
    # hidden = attention heads · head_dim, and GQA has at least as many query heads as KV heads.
    assert shape.hidden % shape.head_dim == 0
    assert shape.hidden // shape.head_dim >= shape.kv_heads
    assert shape.bytes_per_parameter == 2.0 and shape.kv_bytes_per_value == 2.0


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        pytest.param("H100", "H100", id="exact"),
        pytest.param("h100", "H100", id="lower"),
        pytest.param("l40s", "L40S", id="lower-mixed"),
        pytest.param("b200", "B200", id="lower-b200"),
    ],
)
def test_gpu_lookup_is_case_insensitive(lookup: str, expected: str) -> None:
    assert presets.gpu_preset(lookup).name == expected


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        pytest.param("Llama-3.1-8B", "Llama-3.1-8B", id="exact"),
        pytest.param("llama-3.1-70b", "Llama-3.1-70B", id="lower"),
        pytest.param("MIXTRAL-8X7B", "Mixtral-8x7B", id="upper"),
    ],
)
def test_model_lookup_is_case_insensitive(lookup: str, expected: str) -> None:
    assert presets.model_preset(lookup).name == expected


@pytest.mark.parametrize(
    ("lookup", "bad_name", "known"),
    [
        pytest.param(presets.gpu_preset, "TPUv5", list(presets.GPU_PRESETS), id="unknown-gpu"),
        pytest.param(presets.model_preset, "gpt-17", list(presets.MODEL_PRESETS), id="unknown-model"),
    ],
)
def test_unknown_name_raises_preset_error_listing_known_names(
    lookup: Callable[[str], object], bad_name: str, known: list[str]
) -> None:
    with pytest.raises(presets.PresetError) as info:
        lookup(bad_name)
    message = str(info.value)
    assert repr(bad_name) in message
    for name in known:
        assert name in message
    # PresetError is a ValueError, so callers that catch ValueError still see it.
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("served_name", "expected"),
    [
        pytest.param("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B", id="hf-8b-instruct"),
        pytest.param("meta-llama/Llama-3.1-70B-Instruct", "Llama-3.1-70B", id="hf-70b-instruct"),
        pytest.param("meta-llama/llama-3.1-8b", "Llama-3.1-8B", id="lowercase"),
        pytest.param("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5-72B", id="qwen-72b"),
        pytest.param("mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B", id="mixtral"),
        pytest.param("Qwen/Qwen3-30B-A3B", "Qwen3-30B-A3B", id="qwen3-moe"),
        pytest.param("Qwen/Qwen3-32B-AWQ", "Qwen3-32B", id="qwen3-dense"),
        pytest.param("Qwen/Qwen3-235B-A22B-Instruct-2507", "Qwen3-235B-A22B", id="qwen3-large-moe"),
        pytest.param("gpt2", None, id="unknown-none"),
        pytest.param("meta-llama/Llama-3.2-1B", None, id="near-miss-none"),
    ],
)
def test_infer_model_preset_from_the_served_name(served_name: str, expected: str | None) -> None:
    shape = presets.infer_model_preset(served_name)
    assert (shape.name if shape else None) == expected


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [
        # Published totals and per-token activations (model cards / announcements).
        pytest.param("Llama-3.1-70B", 70.6, 70.6, id="dense-70b"),
        pytest.param("Mixtral-8x7B", 46.7, 12.9, id="mixtral-46.7-12.9"),
        pytest.param("Qwen3-30B-A3B", 30.5, 3.3, id="qwen3-30.5-3.3"),
        pytest.param("Qwen3-235B-A22B", 235.0, 22.0, id="qwen3-235-22"),
    ],
)
def test_weight_bytes_count_all_experts_and_active_bytes_only_the_routed_ones(
    name: str, total_b: float, active_b: float
) -> None:
    shape = presets.model_preset(name)
    assert shape.weight_bytes == pytest.approx(total_b * 1e9 * 2)
    assert shape.active_weight_bytes == pytest.approx(active_b * 1e9 * 2)
    fp8 = dataclasses.replace(shape, bytes_per_parameter=1.0)
    assert fp8.active_weight_bytes == pytest.approx(shape.active_weight_bytes / 2)
    assert fp8.weight_bytes == pytest.approx(shape.weight_bytes / 2)


@pytest.mark.parametrize("name", list(presets.MODEL_PRESETS), ids=lambda n: f"fits-somewhere-{n}")
def test_every_model_preset_fits_on_one_node_of_some_gpu_preset(name: str) -> None:
    # A preset nobody can run is a typo: every one fits in 8 × 141 GB (one H200 node) in BF16.
    shape = presets.MODEL_PRESETS[name]
    assert shape.weight_bytes < 8 * presets.gpu_preset("H200").memory_gib * 2**30 * 0.9


@pytest.mark.parametrize(
    ("name", "fp8_tflops", "interconnect_gb_per_s"),
    [
        # Datasheets, dense FP8 (half the "with sparsity" headline) and NVLink per direction.
        pytest.param("H100", 1979.0, 450.0, id="h100-fp8-1979-nvlink-900-both-ways"),
        pytest.param("H200", 1979.0, 450.0, id="h200-same-fp8-as-h100"),
        pytest.param("B200", 4500.0, 900.0, id="b200-fp8-4.5pflops-nvlink5"),
        # No FP8 tensor cores: FP8 checkpoints run weight-only at the BF16 rate.
        pytest.param("A100", 312.0, 300.0, id="a100-no-fp8-nvlink-600"),
        # PCIe Gen4 x16 (64 GB/s both ways), no NVLink.
        pytest.param("L40S", 733.0, 32.0, id="l40s-fp8-733-pcie"),
    ],
)
def test_gpu_preset_carries_fp8_peak_and_interconnect(
    name: str, fp8_tflops: float, interconnect_gb_per_s: float
) -> None:
    gpu = presets.gpu_preset(name)
    assert gpu.peak_fp8_tflops == pytest.approx(fp8_tflops, rel=0.01)
    assert gpu.interconnect_gb_per_s == pytest.approx(interconnect_gb_per_s, rel=0.01)
    assert gpu.peak_tflops("fp8") == gpu.peak_fp8_tflops
    assert gpu.peak_tflops("bf16") == gpu.peak_dense_tflops
    # FP8 is never slower than BF16, and at most twice as fast (Hopper, Ada and Blackwell double it; datasheets round).
    assert gpu.peak_dense_tflops <= gpu.peak_fp8_tflops <= 2.03 * gpu.peak_dense_tflops


@pytest.mark.parametrize(
    ("precision", "bytes_per_parameter", "kv_bytes_per_token"),
    [
        pytest.param("bf16", 2.0, 131072, id="bf16-two-bytes"),
        pytest.param("fp8", 1.0, 65536, id="fp8-one-byte-weights-and-kv"),
    ],
)
def test_with_precision_sets_format_and_both_byte_counts(
    precision: Precision, bytes_per_parameter: float, kv_bytes_per_token: int
) -> None:
    shape = presets.with_precision(presets.model_preset("Llama-3.1-8B"), precision)
    assert shape.precision == precision
    assert shape.bytes_per_parameter == bytes_per_parameter
    assert shape.kv_bytes_per_token == kv_bytes_per_token
    assert shape.weight_bytes == pytest.approx(8.03e9 * bytes_per_parameter)
