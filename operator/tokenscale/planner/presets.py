"""GPU and model-shape presets for the roofline prior (`perf.roofline_performance`).

Called by `planner.profiles` when a pool has no measured profile. Figures are from vendor
datasheets and the models' published configurations; tensor-core figures are DENSE BF16 (the
datasheets' headline numbers with sparsity are twice these).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GPUSpec:
    """One GPU. `kv_transfer_gb_per_s` is its share of the prefill→decode network (e.g. one 400 Gb/s NIC)."""

    name: str
    peak_dense_tflops: float
    hbm_gb_per_s: float
    memory_gib: float
    kv_transfer_gb_per_s: float


@dataclass(frozen=True)
class ModelShape:
    """A transformer's shape. Parameters in billions; `hidden` = attention heads × head dim."""

    name: str
    parameters_b: float
    active_parameters_b: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    bytes_per_parameter: float = 2.0
    kv_bytes_per_value: float = 2.0

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of every layer: 2 · layers · kv_heads · head_dim · bytes."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value


GPU_PRESETS: Mapping[str, GPUSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOPS BF16 dense, 3.35 TB/s, 80 GB.
    "H100": GPUSpec("H100", 989.0, 3350.0, 80.0, 50.0),
    # NVIDIA H200 datasheet (SXM): same compute as H100, 4.8 TB/s, 141 GB.
    "H200": GPUSpec("H200", 989.0, 4800.0, 141.0, 50.0),
    # NVIDIA HGX B200 datasheet: 2.25 PFLOPS BF16 dense per GPU, 8 TB/s, 180 GB.
    "B200": GPUSpec("B200", 2250.0, 8000.0, 180.0, 100.0),
    # NVIDIA A100 datasheet (80 GB SXM): 312 TFLOPS BF16 dense, 2,039 GB/s.
    "A100": GPUSpec("A100", 312.0, 2039.0, 80.0, 25.0),
    # NVIDIA L40S datasheet: 362 TFLOPS BF16 dense, 48 GB GDDR6 at 864 GB/s.
    "L40S": GPUSpec("L40S", 362.0, 864.0, 48.0, 25.0),
}

MODEL_PRESETS: Mapping[str, ModelShape] = {
    # meta-llama/Llama-3.1-8B config.json: 32 layers, hidden 4096, 8 KV heads, head dim 128.
    "Llama-3.1-8B": ModelShape("Llama-3.1-8B", 8.03, 8.03, 32, 8, 128, 4096),
    # meta-llama/Llama-3.1-70B config.json: 80 layers, hidden 8192, 8 KV heads, head dim 128.
    "Llama-3.1-70B": ModelShape("Llama-3.1-70B", 70.6, 70.6, 80, 8, 128, 8192),
    # Qwen/Qwen2.5-72B config.json: 80 layers, hidden 8192, 8 KV heads, head dim 128.
    "Qwen2.5-72B": ModelShape("Qwen2.5-72B", 72.7, 72.7, 80, 8, 128, 8192),
    # mistralai/Mixtral-8x7B: 46.7B total, 12.9B active (2 of 8 experts), 32 layers, 8 KV heads.
    "Mixtral-8x7B": ModelShape("Mixtral-8x7B", 46.7, 12.9, 32, 8, 128, 4096),
    # Qwen/Qwen3-30B-A3B: 30.5B total, 3.3B active, 48 layers, 4 KV heads, head dim 128, 32 heads.
    "Qwen3-30B-A3B": ModelShape("Qwen3-30B-A3B", 30.5, 3.3, 48, 4, 128, 4096),
}


class PresetError(ValueError):
    """An unknown preset name; the message lists the known ones."""


def gpu_preset(name: str) -> GPUSpec:
    for key, spec in GPU_PRESETS.items():
        if key.lower() == name.lower():
            return spec
    raise PresetError(f"unknown GPU {name!r}; known: {', '.join(GPU_PRESETS)} (or give peakTFLOPS/hbmGBps/memoryGiB)")


def model_preset(name: str) -> ModelShape:
    for key, shape in MODEL_PRESETS.items():
        if key.lower() == name.lower():
            return shape
    raise PresetError(f"unknown model preset {name!r}; known: {', '.join(MODEL_PRESETS)}")


def infer_model_preset(model_name: str) -> ModelShape | None:
    """The preset whose name appears in a served model name (`meta-llama/Llama-3.1-8B-Instruct`)."""
    lowered = model_name.lower()
    matches = [shape for key, shape in MODEL_PRESETS.items() if key.lower() in lowered]
    return max(matches, key=lambda s: len(s.name)) if matches else None
