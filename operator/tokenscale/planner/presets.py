"""GPU and model-shape presets for the roofline prior (`perf.roofline_performance`).

Called by `planner.profiles` (a pool's `hardware.gpu` and `modelShape.preset`, or the preset whose
name appears in the served model name) when a pool has no measured profile. Pure data and lookups;
nothing is read from disk or the network.

GPU figures come from NVIDIA's datasheets. Tensor-core throughput is the DENSE figure (BF16 and
FP8): the datasheets' headline "with sparsity" numbers (2:4 structured sparsity) are twice these,
and no serving engine runs dense checkpoints at the sparse rate. Model figures come from each
model's published `config.json` on Hugging Face and its model card (total and activated
parameters). A model's precision (`bf16` or `fp8`, issue 16) sets its weight and KV bytes
(`with_precision`) and which tensor-core peak the prior uses (`GPUSpec.peak_tflops`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from tokenscale.api import Precision

# Bytes per weight and per KV-cache value of each precision: FP8 checkpoints (ModelOpt, llm-compressor)
# quantize the linear layers' weights, and FP8 serving profiles keep the KV cache in FP8 too.
PRECISION_BYTES: Mapping[Precision, float] = {"bf16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class GPUSpec:
    """One GPU.

    peak_dense_tflops     dense BF16 tensor-core throughput, TFLOP/s
    hbm_gb_per_s          memory bandwidth, GB/s (10⁹ bytes per second)
    memory_gib            memory the engine can see, GiB (2³⁰ bytes)
    kv_transfer_gb_per_s  this GPU's share of the prefill→decode network, GB/s (one 400 Gb/s NIC
                          per GPU is 50 GB/s), used for the KV-cache hand-off between pools
    peak_fp8_tflops       dense FP8 tensor-core throughput, TFLOP/s; a GPU without FP8 tensor cores
                          (A100) runs FP8 checkpoints weight-only (FP8 weights, BF16 math), so its
                          figure is its BF16 one
    interconnect_gb_per_s GPU-to-GPU bandwidth for tensor-parallel all-reduces, GB/s in one
                          direction (NVLink's headline figure counts both directions)
    """

    name: str
    peak_dense_tflops: float
    hbm_gb_per_s: float
    memory_gib: float
    kv_transfer_gb_per_s: float
    peak_fp8_tflops: float
    interconnect_gb_per_s: float

    def peak_tflops(self, precision: Precision) -> float:
        """Dense tensor-core TFLOP/s of the GEMMs of a model served in `precision`."""
        return self.peak_fp8_tflops if precision == "fp8" else self.peak_dense_tflops


@dataclass(frozen=True)
class ModelArchitecture:
    """A decoder-only transformer's shape, as the roofline needs it.

    parameters_b         total parameters, billions (all experts of an MoE): what memory holds
    active_parameters_b  parameters one token passes through, billions (= total for a dense model)
    layers, kv_heads, head_dim
                         the KV cache: K and V of `kv_heads` heads of `head_dim` values per layer
    hidden               the attention width, query heads × head_dim (the `d_attn` of the attention
                         FLOPs). It equals the config's `hidden_size` for Llama, Qwen2.5 and Mixtral,
                         but not for Qwen3 MoE models (hidden_size 2048 vs 32 heads × 128).
    bytes_per_parameter  bytes per weight (2 for BF16, 1 for FP8)
    kv_bytes_per_value   bytes per KV-cache value (2 for BF16, 1 for an FP8 KV cache)
    precision            the GEMMs' number format: `bf16`, or `fp8` (FP8 weights and activations,
                         run at the GPU's FP8 peak). `with_precision` sets it with the two byte counts.
    """

    name: str
    parameters_b: float
    active_parameters_b: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    bytes_per_parameter: float = 2.0
    kv_bytes_per_value: float = 2.0
    precision: Precision = "bf16"

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes of one token: 2 (K and V) · layers · kv_heads · head_dim · kv_bytes_per_value."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value

    @property
    def weight_bytes(self) -> float:
        """Bytes of all the weights (every expert of an MoE), as held in GPU memory."""
        return self.parameters_b * 1e9 * self.bytes_per_parameter

    @property
    def active_weight_bytes(self) -> float:
        """Bytes of the weights one token reads (shared layers plus its routed experts)."""
        return self.active_parameters_b * 1e9 * self.bytes_per_parameter


GPU_PRESETS: Mapping[str, GPUSpec] = {
    # "NVIDIA H100 Tensor Core GPU" datasheet, H100 SXM column: BF16 Tensor Core 1,979 TFLOPS with
    # sparsity (989 dense), FP8 Tensor Core 3,958 with sparsity (1,979 dense), GPU memory 80 GB,
    # bandwidth 3.35 TB/s, NVLink 900 GB/s (both directions: 450 each way). One ConnectX-7
    # 400 Gb/s NIC per GPU in DGX/HGX H100 systems (50 GB/s).
    "H100": GPUSpec("H100", 989.0, 3350.0, 80.0, 50.0, 1979.0, 450.0),
    # "NVIDIA H200 Tensor Core GPU" datasheet, H200 SXM column: same Hopper compute as H100 SXM
    # (BF16 989 dense, FP8 1,979 dense), 141 GB of HBM3e at 4.8 TB/s, NVLink 900 GB/s; same
    # 400 Gb/s NIC per GPU.
    "H200": GPUSpec("H200", 989.0, 4800.0, 141.0, 50.0, 1979.0, 450.0),
    # "NVIDIA HGX B200" specifications (8 GPUs): FP16/BF16 Tensor Core 36 PFLOPS and FP8 72 PFLOPS
    # with sparsity, i.e. 2.25 and 4.5 dense per GPU; 1.44 TB of HBM3e (180 GB per GPU) at 64 TB/s
    # (8 TB/s per GPU); fifth-generation NVLink 1.8 TB/s per GPU (900 GB/s each way). DGX B200 has
    # one ConnectX-7 400 Gb/s port per GPU.
    "B200": GPUSpec("B200", 2250.0, 8000.0, 180.0, 50.0, 4500.0, 900.0),
    # "NVIDIA A100 Tensor Core GPU" datasheet, A100 80GB SXM column: BF16 Tensor Core 312 TFLOPS
    # (624 with sparsity), 2,039 GB/s, NVLink 600 GB/s (300 each way); no FP8 tensor cores (FP8
    # checkpoints run weight-only, at the BF16 rate). DGX A100 has one ConnectX-6 200 Gb/s NIC per
    # GPU (25 GB/s).
    "A100": GPUSpec("A100", 312.0, 2039.0, 80.0, 25.0, 312.0, 300.0),
    # "NVIDIA L40S GPU" datasheet: BF16 Tensor Core 362.05 TFLOPS (733 with sparsity), FP8 733
    # (1,466 with sparsity), 48 GB GDDR6 with ECC at 864 GB/s. ECC is on by default and reserves
    # 1/16 of GDDR6 (nvidia-smi shows 46,068 MiB), hence 45 GiB. No NVLink: PCIe Gen4 x16,
    # 64 GB/s both directions (32 each way). PCIe cards: assume one 200 Gb/s NIC per GPU (25 GB/s).
    "L40S": GPUSpec("L40S", 362.0, 864.0, 45.0, 25.0, 733.0, 32.0),
}

MODEL_PRESETS: Mapping[str, ModelArchitecture] = {
    # meta-llama/Llama-3.1-8B config.json: num_hidden_layers 32, hidden_size 4096,
    # num_attention_heads 32, num_key_value_heads 8 (head dim 128); model card: 8.03B parameters.
    "Llama-3.1-8B": ModelArchitecture("Llama-3.1-8B", 8.03, 8.03, 32, 8, 128, 4096),
    # meta-llama/Llama-3.1-70B config.json: 80 layers, hidden_size 8192, 64 attention heads,
    # 8 KV heads (head dim 128); model card: 70.6B parameters.
    "Llama-3.1-70B": ModelArchitecture("Llama-3.1-70B", 70.6, 70.6, 80, 8, 128, 8192),
    # Qwen/Qwen2.5-72B config.json: 80 layers, hidden_size 8192, 64 attention heads, 8 KV heads
    # (head dim 128); model card: 72.7B parameters.
    "Qwen2.5-72B": ModelArchitecture("Qwen2.5-72B", 72.7, 72.7, 80, 8, 128, 8192),
    # Qwen/Qwen3-32B config.json: 64 layers, 64 attention heads, 8 KV heads, head_dim 128
    # (attention width 8192; hidden_size 5120); model card: 32.8B parameters.
    "Qwen3-32B": ModelArchitecture("Qwen3-32B", 32.8, 32.8, 64, 8, 128, 8192),
    # mistralai/Mixtral-8x7B-v0.1 config.json: 32 layers, hidden_size 4096, 32 attention heads,
    # 8 KV heads, 8 local experts with 2 per token; Mistral's announcement: 46.7B total,
    # 12.9B used per token.
    "Mixtral-8x7B": ModelArchitecture("Mixtral-8x7B", 46.7, 12.9, 32, 8, 128, 4096),
    # Qwen/Qwen3-30B-A3B config.json: 48 layers, 32 attention heads, 4 KV heads, head_dim 128,
    # 128 experts with 8 per token; model card: 30.5B total, 3.3B activated.
    "Qwen3-30B-A3B": ModelArchitecture("Qwen3-30B-A3B", 30.5, 3.3, 48, 4, 128, 4096),
    # Qwen/Qwen3-235B-A22B config.json: 94 layers, 64 attention heads, 4 KV heads, head_dim 128,
    # 128 experts with 8 per token; model card: 235B total, 22B activated.
    "Qwen3-235B-A22B": ModelArchitecture("Qwen3-235B-A22B", 235.0, 22.0, 94, 4, 128, 8192),
}


def with_precision(shape: ModelArchitecture, precision: Precision) -> ModelArchitecture:
    """`shape` served in `precision`: its GEMMs' format and its weight and KV bytes (`PRECISION_BYTES`)."""
    per_value = PRECISION_BYTES[precision]
    return replace(shape, precision=precision, bytes_per_parameter=per_value, kv_bytes_per_value=per_value)


class PresetError(ValueError):
    """An unknown preset name; the message lists the known ones."""


def gpu_preset(name: str) -> GPUSpec:
    """The GPU preset called `name` (case-insensitive); PresetError listing the known names otherwise."""
    for key, spec in GPU_PRESETS.items():
        if key.lower() == name.lower():
            return spec
    raise PresetError(f"unknown GPU {name!r}; known: {', '.join(GPU_PRESETS)} (or give peakTFLOPS/hbmGBps/memoryGiB)")


def model_preset(name: str) -> ModelArchitecture:
    """The model preset called `name` (case-insensitive); PresetError listing the known names otherwise."""
    for key, shape in MODEL_PRESETS.items():
        if key.lower() == name.lower():
            return shape
    raise PresetError(f"unknown model preset {name!r}; known: {', '.join(MODEL_PRESETS)}")


def infer_model_preset(model_name: str) -> ModelArchitecture | None:
    """The preset whose name appears in a served model name (`meta-llama/Llama-3.1-8B-Instruct`), else None.

    When several match, the longest name wins (it is the most specific).
    """
    lowered = model_name.lower()
    matches = [shape for key, shape in MODEL_PRESETS.items() if key.lower() in lowered]
    return max(matches, key=lambda s: len(s.name)) if matches else None
