"""Performance models of one serving replica: prefill service time, decode step time, KV capacity.

Called by `planner.sizing` (to size pools), by `sim` (as the fleet's "true" performance), by
`planner.profiles` (roofline prior, measured profiles), by `planner.calibration` (online
correction) and by `tokenscale fit` (least squares over measured points; the CLI parses the file
and passes arrays). Coefficients are data passed in; nothing is loaded at import, and nothing here
does I/O.

Prefill service time of one request (compute bound):   s(ISL) = a + b·ISL + c·ISL²      [seconds]
Decode step time of a batch of n sequences, mean context L tokens:
                                                        τ(n, L) = α + β·n + γ·n·L      [seconds]
(DistServe, Zhong et al., OSDI 2024, §3 latency model; the γ·n·L term is the KV read per step.)

Three sources of coefficients: `roofline_performance` (a prior from datasheet figures, the model's
shape and precision, and the tensor-parallel all-reduces, with defaults fitted to published
measurements), `fit_prefill` / `fit_decode` (non-negative least squares over measured points),
and `planner.calibration` (online correction of either from observed latencies).
`saturated_output_tokens_per_s` is the prior's offline throughput, the figure the engines' own
throughput benchmarks publish (checked against them in tests/planner/test_published.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.api import Precision
from tokenscale.planner.presets import GPUSpec, ModelArchitecture

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PrefillModel:
    """s(ISL) = a_s + b_s_per_token·ISL + c_s_per_token2·ISL², in seconds."""

    a_s: float
    b_s_per_token: float
    c_s_per_token2: float

    def service_time_s(self, isl_tokens: FloatArray | float) -> FloatArray | float:
        """Seconds to prefill a prompt of `isl_tokens` tokens (elementwise over arrays)."""
        x = isl_tokens
        return self.a_s + self.b_s_per_token * x + self.c_s_per_token2 * x * x


@dataclass(frozen=True)
class DecodeModel:
    """τ(n, L) = alpha_s + beta_s·n + gamma_s_per_token·n·L, in seconds per decode step."""

    alpha_s: float
    beta_s: float
    gamma_s_per_token: float

    def step_time_s(self, batch: FloatArray | float, mean_context_tokens: FloatArray | float) -> FloatArray | float:
        """Seconds of one decode step of `batch` sequences of `mean_context_tokens` tokens each on average."""
        return self.alpha_s + self.beta_s * batch + self.gamma_s_per_token * batch * mean_context_tokens


@dataclass(frozen=True)
class ReplicaPerformance:
    """Everything the planner and the simulator need to know about one replica of a pool.

    kv_capacity_tokens       tokens of KV cache the replica holds (all its sequences together)
    kv_bytes_per_token       KV-cache bytes of one token
    max_batch                most sequences one decode step runs (the engine's max_num_seqs)
    kv_transfer_s_per_token  seconds to ship one token's KV from a prefill to a decode replica
    """

    prefill: PrefillModel
    decode: DecodeModel
    kv_capacity_tokens: float
    kv_bytes_per_token: float
    max_batch: int
    kv_transfer_s_per_token: float = 0.0


# --- roofline prior ------------------------------------------------------------------------------

# Defaults fitted to the published-measurements table (tests/planner/published.py, issue 16): the
# geometric-mean ratio of prediction to published figure is within 0.9–1.1 per kind (prefill,
# decode, throughput) with these values. Each names the rows that decide it.
#
# Achievable share of the tensor-core peak in the GEMMs (MFU), per precision. BF16: TensorRT-LLM
# v0.5's batch-1 first-token latencies on A100 in FP16 (LLaMA-2 7B and 70B TP4 at 128 and 2,048
# tokens: 16, 133, 47 and 377 ms) imply about 0.7 of 312 TFLOPS once the weight read and the
# all-reduces are taken out; 0.65 keeps them within +15%. FP8: current engines reach about 0.6 of
# the 1,979-TFLOPS FP8 peak — NVIDIA NIM 1.8.0's Llama-3.3-70B FP8 TP2 first token (48 ms at 500
# tokens, 407 ms at 5,000) and TensorRT-LLM 1.0's offline FP8 throughputs of Llama-3.1-8B and
# Llama-3.3-70B on H100 and H200 (the prompts' share of their time). TensorRT-LLM v0.5's FP8
# figures (2023) were slower, about 0.45 (see the table's notes).
ACHIEVABLE_COMPUTE_FRACTION: Mapping[Precision, float] = {"bf16": 0.65, "fp8": 0.6}
# Achievable share of HBM bandwidth in a decode step. vLLM's latency benchmark (batch 8, 32 in,
# 128 out, BF16; Llama-3.1-8B on one H100 and one H200, Llama-3-70B at TP4), NIM 1.8.0's
# single-stream ITL of Llama-3.3-70B FP8 TP2 (18.6–18.9 ms) and TensorRT-LLM 1.0's offline
# throughputs (bound by the KV read at their batches of 100–1,000) put it at 0.8 with the fixed
# step cost below.
ACHIEVABLE_BANDWIDTH_FRACTION = 0.8
# Fixed cost per engine step that is neither FLOPs nor bytes (scheduling, sampling, kernel launches
# with CUDA graphs, detokenization and streaming). The same vLLM latency runs: 8B decodes 128
# tokens in 998 ms on H100 and 833 ms on H200; the bandwidth terms differ by 4800/3350 and leave
# about 1.5 ms per step that does not scale with bandwidth.
STEP_OVERHEAD_S = 0.0015
# Latency of one tensor-parallel all-reduce of a small message (NCCL or the engines' one-shot
# custom all-reduce kernels within an NVLink domain, which barely grow with the GPU count). vLLM's
# latency benchmark of Llama-3-70B at TP4 (2,444 ms on H100, 2,077 ms on H200) leaves 3.5–5 ms per
# step beyond the weight read and the fixed cost: 160 all-reduces of 22–31 µs.
ALL_REDUCE_LATENCY_S = 25e-6
# Share of the link's one-way line rate (`GPUSpec.interconnect_gb_per_s`) at which an all-reduce's
# bytes move: NCCL's all-reduce bus bandwidth (nccl-tests doc/PERFORMANCE.md: busbw =
# 2(p − 1)/p · N / time) at the message sizes of a prefill pass, 1–82 MB for 128–5,000 tokens.
# Azure's AI-benchmarking-guide publishes all_reduce_perf on 8 GPUs: on ND H100 v5 (NCCL 2.18.5)
# 295.5 GB/s at 32 MiB, 361.8 at 64 MiB and 479 only at 8 GB; on ND H200 v5 (NCCL 2.20.5) 300.9 and
# 368.1. At 32 MiB (2,048 tokens of a hidden size of 8,192 in BF16) that is 199 µs on H100 and
# 195 µs on H200: with `ALL_REDUCE_LATENCY_S` charged apart, the bytes moved at 0.75 and 0.77 of the
# 450 GB/s line rate. With 0.75 the prior's all-reduce time is 0.80–1.17× the published one from
# 2 to 64 MiB on both (tests/planner/test_published.py); at 128 MiB, beyond a prefill pass's
# 82 MB, NCCL's NVLink SHARP pulls ahead and the prior is 1.23–1.27×.
# NCCL's maintainer states the same order for the ring (NVIDIA/nccl-tests issue 212, 2024: "with
# the protocol overhead (~20%) NCCL can get an effective NVLink bandwidth of 370GB/s" of 450). One
# fraction for every GPU: A100 is lower at 2–32 MiB (0.28–0.47 of its 300 GB/s on ND A100 v4,
# NCCL 2.18.5), but TensorRT-LLM's A100 TP4 first tokens are met with this fraction, and A100's own
# 0.47 at 32 MiB would predict the 2,048-token one at 1.16× (published.py, `A100_MID_SIZES`).
ALL_REDUCE_BANDWIDTH_FRACTION = 0.75
# Bytes per activation value moved by the all-reduces: engines reduce in BF16 even for FP8 models.
ACTIVATION_BYTES = 2.0
# Memory held back from the KV cache for activations, CUDA graphs and the sampler: a share of the
# memory the engine may use (vLLM profiles it at start-up; a few percent for these models).
ACTIVATION_RESERVE_FRACTION = 0.05


def tensor_parallel_cost(
    gpu: GPUSpec, model: ModelArchitecture, tensor_parallel: int, all_reduce_latency_s: float = ALL_REDUCE_LATENCY_S
) -> tuple[float, float]:
    """(seconds per forward pass, seconds per token) of the tensor-parallel all-reduces; (0, 0) at TP 1.

    Megatron-style tensor parallelism (Shoeybi et al. 2019, "Megatron-LM", §3) all-reduces the
    residual stream twice per layer, after attention and after the MLP. A ring all-reduce of N bytes
    over p GPUs costs 2(p − 1)·t_step + 2(p − 1)/p · N/B (Thakur, Rabenseifner & Gropp, "Optimization
    of Collective Communication Operations in MPICH", IJHPCA 2005, §4; Patarasuk & Yuan, JPDC 2009,
    bandwidth optimality), B the bandwidth the bytes move at. The latency term is taken as one
    fitted constant per all-reduce (`ALL_REDUCE_LATENCY_S`, the small messages of decode), B as the
    bus bandwidth NCCL reaches at a prefill pass's 1–82 MB, `ALL_REDUCE_BANDWIDTH_FRACTION` f of the
    link's one-way line rate B_link, and N = tokens · hidden · 2 bytes:

        per pass   = 2·layers·latency
        per token  = 2·layers · 2(p − 1)/p · hidden·ACTIVATION_BYTES / (f·B_link)
    """
    if tensor_parallel <= 1:
        return 0.0, 0.0
    all_reduces = 2.0 * model.layers
    ring = 2.0 * (tensor_parallel - 1) / tensor_parallel
    bus_bytes_per_s = gpu.interconnect_gb_per_s * 1e9 * ALL_REDUCE_BANDWIDTH_FRACTION
    per_token_s = all_reduces * ring * model.hidden * ACTIVATION_BYTES / bus_bytes_per_s
    return all_reduces * all_reduce_latency_s, per_token_s


def _check_roofline_arguments(
    tensor_parallel: int,
    fractions: Mapping[str, float],
    max_batch: int,
    all_reduce_latency_s: float,
) -> None:
    """ValueError naming the first argument of `roofline_performance` out of range; `fractions` in (0, 1]."""
    if tensor_parallel < 1:
        raise ValueError(f"tensor_parallel must be ≥ 1, got {tensor_parallel}")
    for label, fraction in fractions.items():
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"{label} must be in (0, 1], got {fraction}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
    if all_reduce_latency_s < 0.0:
        raise ValueError(f"all_reduce_latency_s must be ≥ 0, got {all_reduce_latency_s}")


def kv_free_bytes(gpu: GPUSpec, model: ModelArchitecture, tensor_parallel: int, memory_utilization: float) -> float:
    """Bytes left for the KV cache on `tensor_parallel` GPUs once the weights are loaded.

        free = TP·memory·utilization·(1 − reserve) − W        [bytes]

    with `ACTIVATION_RESERVE_FRACTION` held back for activations, CUDA graphs and the sampler.
    Raises ValueError when nothing is left (the message says to raise gpusPerReplica).
    """
    usable_b = tensor_parallel * gpu.memory_gib * 2**30 * memory_utilization * (1.0 - ACTIVATION_RESERVE_FRACTION)
    free_b = usable_b - model.weight_bytes
    if free_b <= 0:
        raise ValueError(
            f"{model.name} ({model.weight_bytes / 2**30:.0f} GiB of weights) does not fit on "
            f"{tensor_parallel}×{gpu.name} ({usable_b / 2**30:.0f} GiB usable); raise gpusPerReplica"
        )
    return free_b


# Notes on two of `roofline_performance`'s terms.
# [c] Attention scores QKᵀ and the weighted sum AV each cost 2·d_attn FLOPs per (query, key) pair
#     per layer (Hoffmann et al. 2022, "Chinchilla", Appendix F, counts the two separately; Kaplan
#     et al. 2020, Table 1, lists one 2·n_layer·n_ctx·d_attn row). A causal prompt has ISL²/2
#     pairs: 4·layers·d_attn·ISL²/2 = 2·layers·d_attn·ISL², with d_attn = query heads · head_dim.
# [α] For an MoE the weight read counts every expert: with uniform routing a step of n tokens
#     touches a share 1 − (1 − k/E)ⁿ of each layer's E experts (top-k), which is ≥ 95% once
#     n ≥ 3E/k (12 for Mixtral's 2 of 8, 48 for Qwen3's 8 of 128). A line in n cannot follow that
#     saturating curve; this one is exact at the batches a loaded decode pool runs, never
#     optimistic, and pessimistic by up to W/W_A at batch 1 — which online calibration corrects
#     when the fleet runs small batches.
def roofline_performance(
    gpu: GPUSpec,
    model: ModelArchitecture,
    tensor_parallel: int,
    *,
    achievable_compute_fraction: float | None = None,
    achievable_bandwidth_fraction: float = ACHIEVABLE_BANDWIDTH_FRACTION,
    max_batch: int = 256,
    memory_utilization: float = 0.9,
    all_reduce_latency_s: float = ALL_REDUCE_LATENCY_S,
) -> ReplicaPerformance:
    """A replica's performance from first principles (roofline: Williams et al., CACM 2009).

    Units: seconds, bytes, FLOPs. With P parameters of which A are active per token, weights
    W = P·bytes (all held in memory) and W_A = A·bytes, on TP GPUs of dense peak F FLOP/s (the
    BF16 or FP8 figure, by `model.precision`) and HBM bandwidth B, f_c = achievable_compute_fraction
    (MFU; `ACHIEVABLE_COMPUTE_FRACTION` of the precision by default), f_b =
    achievable_bandwidth_fraction, and (r_pass, r_token) the all-reduce cost of
    `tensor_parallel_cost`:

    prefill  s(ISL) = a + b·ISL + c·ISL²
      a = W/(TP·B·f_b) + overhead + r_pass
                                    the weights are read once per forward pass (a long prompt
                                    routes tokens to every expert of an MoE, so all of W)
      b = 2A/(TP·F·f_c) + r_token   2 FLOPs per active parameter per token (Kaplan et al. 2020,
                                    "Scaling Laws for Neural Language Models", §2.1: C ≈ 2N)
      c = 2·layers·d_attn/(TP·F·f_c)
                                    the causal attention FLOPs (note [c] above)
    decode   τ(n, L) = α + β·n + γ·n·L
      α = W/(TP·B·f_b) + overhead + r_pass
                                    every weight is read once per step, every expert of an MoE
                                    included (note [α] above)
      β = 2A/(TP·F·f_c) + r_token   the per-sequence GEMM FLOPs (DistServe adds compute and memory
                                    time rather than taking the max: conservative near the ridge)
                                    and the sequence's share of the all-reduced activations
      γ = kv_bytes_per_token/(TP·B·f_b)
                                    each sequence reads its KV cache every step; the attention
                                    FLOPs on it (4·layers·d_attn per token) are 4–8 FLOPs per KV
                                    byte with GQA, 40–75× below the ridge point (~295 on H100),
                                    so the bytes decide
    KV capacity = `kv_free_bytes` / kv_bytes_per_token   [tokens]
    KV transfer = kv_bytes_per_token / (TP·kv_transfer)   each GPU ships its shard on its own NIC

    The defaults are fitted to published measurements (see the constants above, and the table in
    tests/planner/published.py). Raises ValueError when the weights do not fit on
    `tensor_parallel` GPUs (the message says to raise gpusPerReplica) or an argument is out of range.
    """
    compute_fraction = (
        ACHIEVABLE_COMPUTE_FRACTION[model.precision]
        if achievable_compute_fraction is None
        else achievable_compute_fraction
    )
    fractions = {
        "achievable_compute_fraction": compute_fraction,
        "achievable_bandwidth_fraction": achievable_bandwidth_fraction,
        "memory_utilization": memory_utilization,
    }
    _check_roofline_arguments(tensor_parallel, fractions, max_batch, all_reduce_latency_s)
    kv_free_b = kv_free_bytes(gpu, model, tensor_parallel, memory_utilization)
    flops_per_s = tensor_parallel * gpu.peak_tflops(model.precision) * 1e12 * compute_fraction
    bytes_per_s = tensor_parallel * gpu.hbm_gb_per_s * 1e9 * achievable_bandwidth_fraction
    comm_pass_s, comm_token_s = tensor_parallel_cost(gpu, model, tensor_parallel, all_reduce_latency_s)
    fixed_s = model.weight_bytes / bytes_per_s + STEP_OVERHEAD_S + comm_pass_s
    per_token_s = 2.0 * model.active_parameters_b * 1e9 / flops_per_s + comm_token_s
    kv_b = model.kv_bytes_per_token
    return ReplicaPerformance(
        prefill=PrefillModel(fixed_s, per_token_s, 2.0 * model.layers * model.hidden / flops_per_s),
        decode=DecodeModel(fixed_s, per_token_s, kv_b / bytes_per_s),
        kv_capacity_tokens=kv_free_b / kv_b,
        kv_bytes_per_token=kv_b,
        max_batch=max_batch,
        kv_transfer_s_per_token=kv_b / (tensor_parallel * gpu.kv_transfer_gb_per_s * 1e9),
    )


def saturated_output_tokens_per_s(perf: ReplicaPerformance, isl_tokens: float, osl_tokens: float) -> float:
    """Output tokens per second of one aggregated replica kept full of requests of one shape.

    The offline throughput benchmarks' setting (every request queued at once, TensorRT-LLM's
    `trtllm-bench throughput`, vLLM's `benchmark_throughput`): the replica runs n = min(max_batch,
    KV capacity / (ISL + OSL)) sequences (the KV of a whole request reserved at admission, as
    TensorRT-LLM's default guaranteed-no-evict scheduler does), each of mean context
    L = ISL + OSL/2. Serving n requests costs their prompts' compute, n·(b·ISL + c·ISL²) (chunked
    into the decode steps, so no extra weight read), plus OSL decode steps of τ(n, L):

        tokens/s = n·OSL / (n·(b·ISL + c·ISL²) + OSL·τ(n, L))
    """
    batch = max(1.0, min(float(perf.max_batch), perf.kv_capacity_tokens / (isl_tokens + osl_tokens)))
    prompt_s = batch * (perf.prefill.b_s_per_token * isl_tokens + perf.prefill.c_s_per_token2 * isl_tokens**2)
    decode_s = osl_tokens * float(perf.decode.step_time_s(batch, isl_tokens + osl_tokens / 2.0))
    return batch * osl_tokens / (prompt_s + decode_s)


# --- least-squares fit from measured points ----------------------------------------------------


@dataclass(frozen=True)
class FitQuality:
    """How well a fit explains its points: count, coefficient of determination R², RMSE in seconds."""

    points: int
    r2: float
    rmse_s: float


def _nonnegative_lstsq(design: FloatArray, y: FloatArray) -> FloatArray:
    """argmin ‖design·θ − y‖² subject to θ ≥ 0, exactly, by enumerating supports.

    The NNLS optimum is the unconstrained least-squares solution on its own support (the KKT
    conditions; Lawson & Hanson, "Solving Least Squares Problems", 1974, ch. 23), so among the
    supports whose least-squares solution is non-negative the one with the smallest residual is
    the optimum. With three coefficients that is seven small solves: simpler and surer than an
    active-set loop. Columns are expected pre-scaled to comparable magnitudes.
    """
    columns = design.shape[1]
    best = np.zeros(columns)
    best_ss = float(np.sum(y * y))  # the empty support
    for size in range(1, columns + 1):
        for support in itertools.combinations(range(columns), size):
            idx = list(support)
            solution, *_ = np.linalg.lstsq(design[:, idx], y, rcond=None)
            if np.any(solution < 0):
                continue
            theta = np.zeros(columns)
            theta[idx] = solution
            residual_ss = float(np.sum((y - design @ theta) ** 2))
            if residual_ss < best_ss:
                best, best_ss = theta, residual_ss
    return best


def _quality(design: FloatArray, y: FloatArray, theta: FloatArray) -> FitQuality:
    resid = y - design @ theta
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return FitQuality(points=int(y.size), r2=r2, rmse_s=float(np.sqrt(np.mean(resid**2))))


def _as_points(columns: list[FloatArray], names: list[str], minimum: int) -> list[FloatArray]:
    """The columns as 1-D float arrays of one length, finite and non-negative; ValueError otherwise."""
    arrays = [np.asarray(col, dtype=np.float64).ravel() for col in columns]
    n = arrays[0].size
    if n < minimum:
        raise ValueError(f"need at least {minimum} points to fit {', '.join(names)}, got {n}")
    for col, name in zip(arrays, names, strict=True):
        if col.size != n or not np.all(np.isfinite(col)) or np.any(col < 0):
            raise ValueError(f"{name} must be {n} finite, non-negative numbers")
    return arrays


def _fit(design: FloatArray, y: FloatArray) -> tuple[FloatArray, FitQuality]:
    """Non-negative least squares on column-scaled features (their magnitudes differ by ~10⁸)."""
    scale = np.max(np.abs(design), axis=0)
    scale[scale == 0] = 1.0
    theta = _nonnegative_lstsq(design / scale, y) / scale
    return theta, _quality(design, y, theta)


def fit_prefill(isl_tokens: FloatArray, seconds: FloatArray) -> tuple[PrefillModel, FitQuality]:
    """Fit s(ISL) = a + b·ISL + c·ISL² (every coefficient ≥ 0) to measured prefill times, in seconds.

    Ordinary least squares under non-negativity (a negative coefficient would predict negative or
    shrinking times outside the measured range). Needs at least three distinct prompt lengths.
    """
    x, y = _as_points([isl_tokens, seconds], ["isl_tokens", "seconds"], 3)
    if np.unique(x).size < 3:
        raise ValueError("prefill points need at least 3 different prompt lengths to fit a + b·ISL + c·ISL²")
    theta, quality = _fit(np.column_stack([np.ones_like(x), x, x * x]), y)
    return PrefillModel(float(theta[0]), float(theta[1]), float(theta[2])), quality


def fit_decode(
    batch: FloatArray, mean_context_tokens: FloatArray, seconds: FloatArray
) -> tuple[DecodeModel, FitQuality]:
    """Fit τ(n, L) = α + β·n + γ·n·L (every coefficient ≥ 0) to measured decode step times, in seconds.

    Needs points whose batch sizes and contexts vary independently: with one context length
    n·L is a multiple of n, and β and γ cannot be told apart.
    """
    n, ctx, y = _as_points([batch, mean_context_tokens, seconds], ["batch", "mean_context_tokens", "seconds"], 3)
    nl = n * ctx
    design = np.column_stack([np.ones_like(n), n, nl])
    if np.unique(n).size < 2 or np.unique(nl).size < 3:
        raise ValueError("decode points need several batch sizes and context lengths to separate β from γ")
    if np.linalg.matrix_rank(design / np.max(design, axis=0)) < 3:
        raise ValueError(
            "decode points need context lengths that vary independently of batch size: with one "
            "context length, n·L is proportional to n and β cannot be separated from γ"
        )
    theta, quality = _fit(design, y)
    return DecodeModel(float(theta[0]), float(theta[1]), float(theta[2])), quality
