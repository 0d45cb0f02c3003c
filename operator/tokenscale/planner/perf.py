"""Performance models of one serving replica: prefill service time, decode step time, KV capacity.

Called by `planner.sizing` (to size pools), by `sim` (as the fleet's "true" performance), by
`planner.profiles` (roofline prior, measured profiles) and by `tokenscale fit` (least squares).
Coefficients are data passed in; nothing is loaded at import.

Prefill service time of one request (compute bound):   s(ISL) = a + b·ISL + c·ISL²      [seconds]
Decode step time of a batch of n sequences, mean context L tokens:
                                                        τ(n, L) = α + β·n + γ·n·L      [seconds]
(DistServe, Zhong et al., OSDI 2024, §3 latency model; the γ·n·L term is the KV read per step.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.planner.presets import GPUSpec, ModelShape

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PrefillModel:
    """s(ISL) = a_s + b_s_per_token·ISL + c_s_per_token2·ISL², in seconds."""

    a_s: float
    b_s_per_token: float
    c_s_per_token2: float

    def service_time_s(self, isl_tokens: FloatArray | float) -> FloatArray | float:
        x = isl_tokens
        return self.a_s + self.b_s_per_token * x + self.c_s_per_token2 * x * x


@dataclass(frozen=True)
class DecodeModel:
    """τ(n, L) = alpha_s + beta_s·n + gamma_s_per_token·n·L, in seconds per decode step."""

    alpha_s: float
    beta_s: float
    gamma_s_per_token: float

    def step_time_s(self, batch: FloatArray | float, mean_context_tokens: FloatArray | float) -> FloatArray | float:
        return self.alpha_s + self.beta_s * batch + self.gamma_s_per_token * batch * mean_context_tokens


@dataclass(frozen=True)
class ReplicaPerformance:
    """Everything the planner and the simulator need to know about one replica of a pool."""

    prefill: PrefillModel
    decode: DecodeModel
    kv_capacity_tokens: float
    kv_bytes_per_token: float
    max_batch: int
    kv_transfer_s_per_token: float = 0.0


# --- roofline prior ------------------------------------------------------------------------------

# Fixed cost per engine step that is neither FLOPs nor bytes (scheduling, kernel launches with
# CUDA graphs); a few hundred microseconds in vLLM's V1 engine.
STEP_OVERHEAD_S = 0.0005
# Experts touched per step saturate around this batch in top-2-of-8 MoE: beyond it every expert's
# weights are read each step (a first-order model; see roofline_performance).
MOE_SATURATION_BATCH = 32.0


def roofline_performance(
    gpu: GPUSpec,
    model: ModelShape,
    tensor_parallel: int,
    *,
    achievable_compute_fraction: float = 0.5,
    achievable_bandwidth_fraction: float = 0.7,
    max_batch: int = 256,
    memory_utilization: float = 0.9,
) -> ReplicaPerformance:
    """A replica's performance from first principles (roofline: Williams et al., CACM 2009).

    With P parameters (A active), W = P·bytes weights, TP GPUs of peak F FLOP/s and bandwidth B:
      prefill  s(ISL) = a + b·ISL + c·ISL²:  a = W/(TP·B·f_b) (weights read once),
               b = 2A/(TP·F·f_c) (2 FLOPs per parameter per token),
               c = 2·layers·hidden/(TP·F·f_c) (causal attention: QKᵀ and AV, 4·layers·hidden·p
               FLOPs at position p, summed over p < ISL; Kaplan et al. 2020, Table 1);
      decode   τ(n, L) = α + β·n + γ·n·L:  α = A·bytes/(TP·B·f_b) + overhead (weights per step),
               β = 2A/(TP·F·f_c) + (P − A)·bytes/(TP·B·f_b)/32 (MoE: more experts read as the
               batch grows), γ = kv_bytes_per_token/(TP·B·f_b) (each sequence reads its KV);
      KV capacity = (TP·memory·utilization − W − 5% activation reserve) / kv_bytes_per_token.
    f_c (MFU) and f_b are achievable fractions of peak; defaults are typical of vLLM on Hopper.
    """
    if tensor_parallel < 1:
        raise ValueError("tensor_parallel must be ≥ 1")
    flops = tensor_parallel * gpu.peak_dense_tflops * 1e12 * achievable_compute_fraction
    bandwidth = tensor_parallel * gpu.hbm_gb_per_s * 1e9 * achievable_bandwidth_fraction
    weights_b = model.parameters_b * 1e9 * model.bytes_per_parameter
    active_bytes = model.active_parameters_b * 1e9 * model.bytes_per_parameter
    active_flops_per_token = 2.0 * model.active_parameters_b * 1e9
    kv_per_token = model.kv_bytes_per_token
    memory_b = tensor_parallel * gpu.memory_gib * 2**30 * memory_utilization
    free_b = memory_b * 0.95 - weights_b
    if free_b <= 0:
        raise ValueError(
            f"{model.name} ({weights_b / 2**30:.0f} GiB of weights) does not fit on {tensor_parallel}×{gpu.name}; "
            "raise gpusPerReplica"
        )
    prefill = PrefillModel(
        a_s=weights_b / bandwidth + STEP_OVERHEAD_S,
        b_s_per_token=active_flops_per_token / flops,
        c_s_per_token2=2.0 * model.layers * model.hidden / flops,
    )
    expert_growth = (weights_b - active_bytes) / bandwidth / MOE_SATURATION_BATCH
    decode = DecodeModel(
        alpha_s=active_bytes / bandwidth + STEP_OVERHEAD_S,
        beta_s=active_flops_per_token / flops + expert_growth,
        gamma_s_per_token=kv_per_token / bandwidth,
    )
    transfer = tensor_parallel * gpu.kv_transfer_gb_per_s * 1e9
    return ReplicaPerformance(
        prefill=prefill,
        decode=decode,
        kv_capacity_tokens=free_b / kv_per_token,
        kv_bytes_per_token=kv_per_token,
        max_batch=max_batch,
        kv_transfer_s_per_token=kv_per_token / transfer,
    )


# --- least-squares fit from measured points ----------------------------------------------------


@dataclass(frozen=True)
class FitQuality:
    """How well a fit explains its points."""

    points: int
    r2: float
    rmse_s: float


def _nonnegative_lstsq(design: FloatArray, y: FloatArray) -> FloatArray:
    """Least squares with θ ≥ 0 by an active set: drop the most negative coefficient and refit."""
    active = list(range(design.shape[1]))
    theta = np.zeros(design.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(design[:, active], y, rcond=None)
        if np.all(sol >= 0):
            theta[active] = sol
            return theta
        active.pop(int(np.argmin(sol)))
    return theta


def _quality(design: FloatArray, y: FloatArray, theta: FloatArray) -> FitQuality:
    resid = y - design @ theta
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return FitQuality(points=int(y.size), r2=r2, rmse_s=float(np.sqrt(np.mean(resid**2))))


def _check_points(columns: list[FloatArray], names: list[str], minimum: int) -> None:
    n = columns[0].size
    if n < minimum:
        raise ValueError(f"need at least {minimum} points to fit {', '.join(names)}, got {n}")
    for col, name in zip(columns, names, strict=True):
        if col.size != n or not np.all(np.isfinite(col)) or np.any(col < 0):
            raise ValueError(f"{name} must be {n} finite, non-negative numbers")


def fit_prefill(isl_tokens: FloatArray, seconds: FloatArray) -> tuple[PrefillModel, FitQuality]:
    """Fit s(ISL) = a + b·ISL + c·ISL² (coefficients ≥ 0) to measured prefill times."""
    x, y = np.asarray(isl_tokens, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    _check_points([x, y], ["isl_tokens", "seconds"], 3)
    if np.unique(x).size < 3:
        raise ValueError("prefill points need at least 3 different prompt lengths to fit a + b·ISL + c·ISL²")
    scale = np.array([1.0, x.max(), x.max() ** 2])
    design = np.column_stack([np.ones_like(x), x, x * x]) / scale
    theta = _nonnegative_lstsq(design, y) / scale
    model = PrefillModel(float(theta[0]), float(theta[1]), float(theta[2]))
    return model, _quality(design * scale, y, theta)


def fit_decode(
    batch: FloatArray, mean_context_tokens: FloatArray, seconds: FloatArray
) -> tuple[DecodeModel, FitQuality]:
    """Fit τ(n, L) = α + β·n + γ·n·L (coefficients ≥ 0) to measured decode step times."""
    n = np.asarray(batch, dtype=np.float64)
    ctx = np.asarray(mean_context_tokens, dtype=np.float64)
    y = np.asarray(seconds, dtype=np.float64)
    _check_points([n, ctx, y], ["batch", "mean_context_tokens", "seconds"], 3)
    if np.unique(n).size < 2 or np.unique(n * ctx).size < 3:
        raise ValueError("decode points need several batch sizes and context lengths to separate β from γ")
    nl = n * ctx
    scale = np.array([1.0, n.max(), nl.max()])
    design = np.column_stack([np.ones_like(n), n, nl]) / scale
    theta = _nonnegative_lstsq(design, y) / scale
    model = DecodeModel(float(theta[0]), float(theta[1]), float(theta[2]))
    return model, _quality(design * scale, y, theta)
