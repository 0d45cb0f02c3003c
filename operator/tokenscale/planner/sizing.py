"""Smallest replica counts that meet the TTFT and TPOT objectives, vectorized over candidate counts.

Called by `planner.plan` (and by the simulator's static policy and fidelity report). Every function
evaluates a whole array of candidate counts at once and returns arrays, so choosing a count is one
`argmax`.

Prefill (Disaggregated): an M/G/c queue of c replicas, one prompt at a time per replica. The
first-token time is wait + prefill + KV transfer + one decode step; its quantile is taken from
the whole distribution (`queueing.sojourn_quantile_s`), not from means. The service times are
s(ISL) at the points of the observed prompt-length distribution (`lengths`); the arrivals are
Poisson with the fitted c_a² within 15-s bins (`tail`) and a rate that varies across bins as the
counts showed (`queueing.modulated_sojourn_quantile_s`).

Decode: continuous batching as load-dependent processor sharing (DESIGN.md). With per-replica
arrival rate λ/m, mean output length OSL and step time τ(n, L) = α + β·n + γ·n·L, Little's law
n̄ = (λ/m)·OSL·τ(n̄, L) has the closed-form solution

    n̄ = (λ/m)·OSL·α / (1 − (λ/m)·OSL·(β + γ·L)),          stable iff (λ/m)·OSL·(β + γ·L) < 1.

The batch is a birth–death chain whose stationary law is negative binomial, NegBin(r, u) with
r = α/(β + γ·L) and u = (λ/m)·OSL·(β + γ·L) (mean n̄; a Poisson(n̄) batch, M/G/∞, has too thin a
tail). vLLM's inter-token-latency histogram records one sample per token per step, so a token sees
the size-biased batch, 1 + NegBin(r + 1, u); the ITL quantile q is τ(1 + N_q, L) with N_q that
negative binomial's quantile (`size_biased_batch_quantile`). The TPOT objective is per request, the
mean step over a request's life: its quantile over requests comes from `planner.tpot`.
KV memory: the q-quantile batch holding ISL + OSL tokens each must fit in the KV cache.

Aggregated: each step carries the decode batch plus a chunk of prompt tokens (chunked prefill,
`max_num_batched_tokens`). A fraction u_p = (λ/m)·(s(ISL) − a) of GPU time goes to prompts, so
decode steps come (1 − u_p) as often: n̄ = (λ/m)·OSL·τ(n̄)/(1 − u_p). The prompt queue drains at
(budget − n̄) tokens per step of τ(n̄) + b·(budget − n̄), so a prompt's work in the M/G/c queue is
its share of those steps; its own time to first token counts every whole step its chunks ride in
(`aggregated_prompt_service_s`, issue 16). A token waits a plain decode step or, in the share of
steps that carry a chunk, a step stretched by that chunk (`chunked_itl_quantile_s`); a request's
TPOT counts every prompt prefilled during its life (`planner.tpot`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from tokenscale.planner import lengths, queueing, tpot
from tokenscale.planner.perf import ReplicaPerformance

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Load:
    """Offered load to plan for. Lengths in tokens; cv2 = variance / mean²."""

    rate_per_s: float
    isl_mean_tokens: float
    osl_mean_tokens: float
    isl_cv2: float = 1.0
    osl_cv2: float = 1.0
    arrival_cv2: float = 1.0
    isl_shape: lengths.LengthDistribution | None = None  # observed prompt-length shape (any mean)
    rate_cv2: float = 0.0  # c² of the arrival rate across bins of `rate_bin_s` (slow modulation)
    rate_bin_s: float = 15.0

    def scaled(self, factor: float) -> Load:
        return replace(self, rate_per_s=self.rate_per_s * factor)


class Binding(StrEnum):
    """What sets a count: the first objective or limit a count fails, in the order sizing checks them.

    The values are what status (`pools.<role>.binding`), `plan` output and the operator's
    `tokenscale_decisions_total{binding}` show.
    """

    OK = "ok"  # nothing fails
    STABILITY = "stability"  # the load exceeds what the replicas can ever serve
    BATCH = "batch"  # the decode batch outgrows max_batch
    KV = "kv"  # the KV cache overflows
    TPOT = "tpot"  # the TPOT objective is missed
    TTFT = "ttft"  # the TTFT objective is missed
    BACKLOG = "backlog"  # a queue that has built up must drain (`planner.backlog`; plan only)
    METRICS = "metrics"  # no count was sized: a load signal is missing (plan only)
    MIN = "min"  # the fewest replicas allowed (plan only)


@dataclass(frozen=True)
class PoolSizing:
    """Predicted latency quantiles and the binding constraint for each candidate count.

    `feasible[i]` says whether counts[i] meets every objective and limit. `ttft_s` / `tpot_s` are
    the predicted quantiles (inf where unstable; `tpot_s` per request, the objective's meaning) and
    `itl_s` the per-token inter-token latency at the same quantile; `binding[i]` names what fails at
    counts[i] (a `Binding` value; "ok" where nothing does).
    """

    counts: IntArray
    ttft_s: FloatArray
    tpot_s: FloatArray
    itl_s: FloatArray
    feasible: npt.NDArray[np.bool_]
    binding: npt.NDArray[np.str_]
    kv_usage_fraction: FloatArray
    batch_quantile: FloatArray  # decode batch a token sees at the TPOT quantile
    batch_mean: FloatArray  # mean decode batch per replica (Little's law)

    def smallest_feasible(self) -> int | None:
        """Index of the fewest replicas that meet everything, or None when none does."""
        hits = np.flatnonzero(self.feasible)
        return int(hits[0]) if hits.size else None


def lognormal_points(mean: float, cv2: float) -> tuple[FloatArray, FloatArray]:
    """(slice means, slice probabilities) of a lognormal with the given mean and cv² (`lengths.lognormal`)."""
    d = lengths.lognormal(mean, cv2)
    return d.tokens, d.weights


def batch_context_tokens(isl_mean_tokens: float, osl_mean_tokens: float, osl_cv2: float) -> float:
    """Mean context of the sequences in a decode batch: E[ISL] + E[OSL²]/(2·E[OSL]) tokens.

    A sequence stays in the batch for OSL steps, so the batch holds sequences in proportion to their
    OSL (size-biased sampling, as in renewal theory's inspection paradox), and a sequence seen at a
    random step is halfway through: E[OSL·(ISL + OSL/2)]/E[OSL] = E[ISL] + OSL·(1 + c²_OSL)/2 with ISL
    and OSL independent. The plain E[ISL] + E[OSL]/2 is short by OSL·c²/2 (≈ 8% of TPOT on the Azure
    2023 conversation trace, whose outputs have c² ≈ 1).
    """
    return isl_mean_tokens + osl_mean_tokens * (1.0 + max(osl_cv2, 0.0)) / 2.0


def isl_points(load: Load) -> tuple[FloatArray, FloatArray]:
    """Prompt lengths to integrate over: the observed shape at the planned mean, else a lognormal."""
    d = lengths.at_mean(load.isl_shape, load.isl_mean_tokens, load.isl_cv2)
    return d.tokens, d.weights


def size_biased_batch_quantile(q: float, shape: float, utilization: FloatArray, kmax: int = 20_000) -> FloatArray:
    """q-quantile of the decode batch a generated token sees: 1 + NegBin(shape + 1, u).

    Continuous batching is a birth–death chain: arrivals at rate λ, and with n sequences each
    finishes after OSL steps of τ(n) = α + b·n, so the death rate is n/(OSL·(α + b·n)). Its
    stationary law is negative binomial, P(n) ∝ C(n + r − 1, n)·uⁿ, with r = α/b and
    u = λ·OSL·b (mean r·u/(1 − u): Little's law). A token is produced by each sequence in a
    step, so tokens see the size-biased batch, which for NegBin(r, u) is 1 + NegBin(r + 1, u).
    A Poisson batch (M/G/∞) has the same mean but too thin a tail: at u = 0.8 its p90 batch is
    ~20% low (checked against a step-by-step simulation in the tests). inf where u ≥ 1 or the
    quantile lies beyond `kmax`.
    """
    u = np.asarray(utilization, dtype=np.float64)
    valid = np.isfinite(u) & (u >= 0) & (u < 1)
    safe = np.where(valid, u, 0.0)
    r = shape + 1.0
    mean = r * safe / (1.0 - safe)
    sd = np.sqrt(r * safe) / (1.0 - safe)
    # Search no further than the heaviest valid row needs: mean + 12 standard deviations.
    widest = int(np.minimum(kmax, np.ceil(mean + 12.0 * sd + 30.0)).max(initial=0.0))
    # Each row is first tabulated only to mean + t·sd with t = √(q/(1 − q)), where Cantelli's
    # inequality puts at least q of the mass, in groups of rows of similar reach (one heavily loaded
    # count does not widen the table of the others). The pmf is a running sum from k = 0, so a
    # shorter table holds the same numbers as a longer one: a row whose quantile it misses is
    # retried at the widest reach, and every answer equals that of a single table that wide.
    t = min(12.0, math.sqrt(max(q, 0.0) / max(1.0 - q, 1e-12)))
    reach = np.minimum(widest, np.ceil(mean + t * sd + 30.0)).astype(np.int64)
    group = np.ceil(np.log2(reach) / 3.0)  # reaches within a factor of 8 share a table
    k = np.arange(1, widest + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_growth = np.log((k - 1.0 + r) / k)
    quantile = np.full(u.shape, np.inf)
    for g in np.unique(group[valid]):
        rows = np.flatnonzero(valid & (group == g))
        quantile[rows] = _negbin_quantile(q, r, safe[rows], log_growth[: int(reach[rows].max())])
    retry = np.flatnonzero(valid & np.isinf(quantile) & (reach < widest))
    if retry.size:
        quantile[retry] = _negbin_quantile(q, r, safe[retry], log_growth)
    return np.where(valid, quantile, np.inf)


def _negbin_quantile(q: float, r: float, u: FloatArray, log_growth: FloatArray) -> FloatArray:
    """1 + the q-quantile of NegBin(r, u) per row, from a table over 0…len(log_growth); inf if beyond it.

    P(0) = (1 − u)^r and P(k)/P(k − 1) = u·(k − 1 + r)/k, so ln P(k) is a running sum of
    ln u + `log_growth[k − 1]` (= ln((k − 1 + r)/k)), and the CDF a running sum of P.
    """
    table = np.empty((u.size, log_growth.size + 1))
    table[:, 0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.cumsum(np.log(u)[:, None] + log_growth[None, :], axis=1, out=table[:, 1:])
        table += r * np.log1p(-u)[:, None]
    np.exp(table, out=table)
    np.cumsum(table, axis=1, out=table)
    reached = table >= q - 1e-12
    first = np.argmax(reached, axis=1)
    quantile: FloatArray = np.where(reached[np.arange(u.size), first], 1.0 + first, np.inf)
    return quantile


def decode_batch_mean(counts: IntArray, load: Load, perf: ReplicaPerformance, prefill_share: FloatArray) -> FloatArray:
    """Mean decode batch per replica (Little's law, module docstring): inf where the count is unstable."""
    lam = load.rate_per_s / counts.astype(np.float64)
    osl = load.osl_mean_tokens
    per_seq = perf.decode.beta_s + perf.decode.gamma_s_per_token * batch_context_tokens(
        load.isl_mean_tokens, osl, load.osl_cv2
    )
    free = 1.0 - prefill_share
    denom = free - lam * osl * per_seq
    stable = (denom > 0) & (free > 0)
    out: FloatArray = np.where(stable, lam * osl * perf.decode.alpha_s / np.where(stable, denom, 1.0), np.inf)
    return out


def decode_sizing(
    counts: IntArray,
    load: Load,
    perf: ReplicaPerformance,
    tpot_quantile: float,
    tpot_target_s: float,
    prompts_at: Callable[[float], tpot.PromptWork] | None = None,
    chunk_tokens: int | None = None,
) -> PoolSizing:
    """Predicted per-request TPOT and per-token ITL quantiles, KV use and feasibility of each decode count.

    `prompts_at(m)` (aggregated mode) are the prompts each replica also prefills when the arrival
    rate is m times the load's (u_p = `share`); `chunk_tokens` the per-step token budget, whose
    prefill part lengthens the steps that carry a chunk. The TPOT objective is judged on the
    per-request quantile (`planner.tpot`), over the rate's spread across bins when `load.rate_cv2`
    > 0 (`tpot.modulated_request_tpot_quantile_s`); the batch, KV and ITL at the mean rate.
    """
    prompts = None if prompts_at is None else prompts_at(1.0)
    m = counts.astype(np.float64)
    lam = load.rate_per_s / m
    osl = load.osl_mean_tokens
    mean_ctx = batch_context_tokens(load.isl_mean_tokens, osl, load.osl_cv2)
    dm = perf.decode
    u_p = np.zeros_like(m) if prompts is None else prompts.share
    free = 1.0 - u_p
    n_mean = decode_batch_mean(counts, load, perf, u_p)
    stable = np.isfinite(n_mean)
    per_seq = dm.beta_s + dm.gamma_s_per_token * mean_ctx
    u = np.where(stable, lam * osl * per_seq / np.where(free > 0, free, 1.0), np.inf)
    n_q = size_biased_batch_quantile(tpot_quantile, dm.alpha_s / per_seq, u)
    step_q = np.asarray(dm.step_time_s(n_q, mean_ctx), dtype=np.float64)
    if chunk_tokens is not None and prompts is not None:
        step_q = np.where(
            stable, chunked_itl_quantile_s(tpot_quantile, load, perf, u, n_mean, prompts, chunk_tokens), step_q
        )
    itl = np.where(stable, step_q, np.inf)
    multipliers, probabilities = queueing.gamma_rate_points(load.rate_cv2)
    points = [
        _rate_point(float(mk), float(pk), lam * osl * per_seq, prompts_at)
        for mk, pk in zip(multipliers, probabilities, strict=True)
    ]
    request_tpot = np.where(
        stable,
        tpot.modulated_request_tpot_quantile_s(tpot_quantile, dm.alpha_s, per_seq, points, osl, load.osl_cv2),
        np.inf,
    )
    kv_tokens = n_q * (load.isl_mean_tokens + osl)
    kv_frac = np.where(stable, kv_tokens / perf.kv_capacity_tokens, np.inf)
    meets_tpot = request_tpot <= tpot_target_s
    fits_kv = kv_frac <= 1.0
    fits_batch = n_q <= perf.max_batch
    feasible = stable & meets_tpot & fits_kv & fits_batch
    binding = np.where(
        ~stable,
        "stability",
        np.where(~fits_batch, "batch", np.where(~fits_kv, "kv", np.where(~meets_tpot, "tpot", "ok"))),
    )
    return PoolSizing(
        counts=counts,
        ttft_s=np.full(m.shape, np.nan),
        tpot_s=request_tpot,
        itl_s=itl,
        feasible=feasible,
        binding=binding,
        kv_usage_fraction=kv_frac,
        batch_quantile=n_q,
        batch_mean=n_mean,
    )


def _rate_point(
    multiplier: float,
    probability: float,
    offered: FloatArray,
    prompts_at: Callable[[float], tpot.PromptWork] | None,
) -> tpot.RatePoint:
    """The decode chain when the rate is `multiplier` times the mean (`offered` = λ/m·OSL·(β + γL) there
    at the mean): requests arriving then weigh p·m, and prompts, if any, take their share of the steps."""
    here = None if prompts_at is None else prompts_at(multiplier)
    free = np.ones_like(offered) if here is None else 1.0 - here.share
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(free > 0, multiplier * offered / np.where(free > 0, free, 1.0), np.inf)
    return tpot.RatePoint(probability * multiplier, u, here)


CHUNK_LENGTH_POINTS = 24  # equiprobable prompt lengths the chunk-step mixture integrates over


def chunked_itl_quantile_s(
    q: float,
    load: Load,
    perf: ReplicaPerformance,
    utilization: FloatArray,
    batch_mean: FloatArray,
    prompts: tpot.PromptWork,
    chunk_tokens: int,
) -> FloatArray:
    """Per-token ITL q-quantile of an aggregated replica: decode steps, some stretched by a prompt chunk.

    A token waits one step: τ(N) with N = 1 + NegBin(r + 1, u) (the batch a token sees, as in
    `size_biased_batch_quantile`), plus, in the share φ of steps that carry prompt tokens, that chunk's
    compute X. A prompt of ISL tokens rides ⌈ISL/room⌉ steps (room = budget − n̄): ⌊ISL/room⌋ full
    chunks and one of the remainder, each costing its share of the prompt's compute w(ISL) = s(ISL) − a.
    Chunk steps come at (λ/m)·E[⌈ISL/room⌉] a second and steps last τ̄/(1 − u_p) on average, so
    φ = (λ/m)·E[⌈ISL/room⌉]·τ̄/(1 − u_p) (at most 1). The token-weighted CDF is then
    (1 − φ)·G(t) + φ·Σ_j π_j·G(t − X_j), G the CDF of τ(N), and its quantile is found by bisection.
    Chunks of different prompts sharing a step are not merged (exact while prompts rarely queue).
    """
    dm = perf.decode
    mean_ctx = batch_context_tokens(load.isl_mean_tokens, load.osl_mean_tokens, load.osl_cv2)
    per_seq = dm.beta_s + dm.gamma_s_per_token * mean_ctx
    shape = dm.alpha_s / per_seq + 1.0
    u = np.where(np.isfinite(utilization) & (utilization < 1), utilization, 0.0)
    # CDF of the others in the batch, NegBin(shape, u), tabulated to mean + 12 sd (`_negbin_quantile`).
    reach = int(np.minimum(20_000, np.ceil(shape * u / (1 - u) + 12 * np.sqrt(shape * u) / (1 - u) + 30)).max())
    k = np.arange(1, reach + 1, dtype=np.float64)
    table = np.empty((u.size, reach + 1))
    table[:, 0] = 0.0
    with np.errstate(divide="ignore"):
        np.cumsum(np.log(u)[:, None] + np.log((k - 1.0 + shape) / k)[None, :], axis=1, out=table[:, 1:])
    table = np.cumsum(np.exp(table + shape * np.log1p(-u)[:, None]), axis=1)

    def batch_cdf(t: FloatArray) -> FloatArray:  # P(τ(1 + NegBin) ≤ t), t of shape (M, …)
        others = np.floor((t - dm.alpha_s) / per_seq - 1.0 + 1e-9)
        index = np.clip(others, 0, reach).astype(np.int64).reshape(u.size, -1)
        got = np.take_along_axis(table, index, axis=1).reshape(t.shape)
        out: FloatArray = np.where(others < 0, 0.0, np.where(others > reach, 1.0, got))
        return out

    # Chunk costs at equiprobable prompt lengths: full chunks and the remainder, per candidate.
    isl, weights = isl_points(load)
    levels = (np.arange(CHUNK_LENGTH_POINTS) + 0.5) / CHUNK_LENGTH_POINTS
    isl = isl[np.minimum(np.searchsorted(np.cumsum(weights), levels), isl.size - 1)]
    work = np.asarray(perf.prefill.service_time_s(isl), dtype=np.float64) - perf.prefill.a_s
    room = np.maximum(chunk_tokens - np.where(np.isfinite(batch_mean), batch_mean, 0.0), 1.0)[:, None]
    full = np.floor(isl[None, :] / room)
    rest = isl[None, :] - full * room
    cost = np.concatenate((work * room / isl, work * rest / isl), axis=1)  # (M, 2·points)
    count = np.concatenate((full, (rest > 0).astype(np.float64)), axis=1)
    chunks_per_prompt = count.sum(axis=1) / CHUNK_LENGTH_POINTS
    step_mean = dm.alpha_s + per_seq * np.where(np.isfinite(batch_mean), batch_mean, 0.0)
    phi = np.minimum(1.0, prompts.rate_per_s * chunks_per_prompt * step_mean / np.maximum(1.0 - prompts.share, 1e-9))
    share = count / np.maximum(count.sum(axis=1, keepdims=True), 1e-300)

    def cdf(t: FloatArray) -> FloatArray:
        plain = batch_cdf(t[:, None])[:, 0]
        stretched = (share * batch_cdf(t[:, None] - cost)).sum(axis=1)
        out: FloatArray = (1.0 - phi) * plain + phi * stretched
        return out

    lo = np.full(u.size, dm.alpha_s)
    hi = dm.alpha_s + per_seq * (reach + 2.0) + cost.max(axis=1)
    for _ in range(24):  # on ln t: 24 halvings of a bracket within 10⁴ leave it within 4e-5
        mid = np.sqrt(lo * hi)
        below = cdf(mid) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    quantile: FloatArray = hi
    return quantile


def first_decode_step_s(load: Load, perf: ReplicaPerformance, batch: float) -> float:
    """Time of the decode step that emits the first token, at a given decode batch."""
    return float(perf.decode.step_time_s(batch + 1.0, load.isl_mean_tokens))


def _prefill_times(
    load: Load, perf: ReplicaPerformance, extra_delay_s: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per prompt-length point: service s(ISL), time to first token after the wait, and probability."""
    isl, weights = isl_points(load)
    service = np.asarray(perf.prefill.service_time_s(isl), dtype=np.float64)
    delay = service + perf.kv_transfer_s_per_token * isl + extra_delay_s
    return service, delay, weights


def prefill_mean_service_s(load: Load, perf: ReplicaPerformance) -> float:
    """E[s(ISL)] in seconds over the planned prompt lengths."""
    service, _, weights = _prefill_times(load, perf, 0.0)
    return float(np.dot(weights, service))


def prefill_sizing(
    counts: IntArray,
    load: Load,
    perf: ReplicaPerformance,
    ttft_quantile: float,
    ttft_target_s: float,
    extra_delay_s: float = 0.0,
) -> PoolSizing:
    """Predicted TTFT quantile of each candidate prefill replica count (Disaggregated mode).

    TTFT = W + s(ISL) + kv_transfer·ISL + `extra_delay_s` (the first decode step). W is the
    M/G/c wait (module docstring: bursts within and across bins); ISL follows the observed shape (or
    a lognormal with the observed mean and cv²), pushed through s(ISL) to give the service times.
    """
    service, delay, weights = _prefill_times(load, perf, extra_delay_s)
    ttft = _sojourn_quantile(counts, load, service, delay, weights, ttft_quantile)
    feasible = ttft <= ttft_target_s
    binding = np.where(~np.isfinite(ttft), Binding.STABILITY, np.where(feasible, Binding.OK, Binding.TTFT))
    return PoolSizing(
        counts=counts,
        ttft_s=ttft,
        tpot_s=np.full(counts.shape, np.nan),
        itl_s=np.full(counts.shape, np.nan),
        feasible=feasible,
        binding=binding,
        kv_usage_fraction=np.full(counts.shape, np.nan),
        batch_quantile=np.full(counts.shape, np.nan),
        batch_mean=np.full(counts.shape, np.nan),
    )


def prefill_ttft_exceedance_by_cv2(
    count: int,
    load: Load,
    perf: ReplicaPerformance,
    bound_s: float,
    arrival_cv2: FloatArray,
    extra_delay_s: float = 0.0,
) -> FloatArray:
    """Predicted P(TTFT > bound) with `count` prefill replicas at each arrival c_a² of a grid (for `tail`)."""
    service, delay, weights = _prefill_times(load, perf, extra_delay_s)
    mean_s, cs2 = queueing.service_moments(service, weights)
    servers = np.full(arrival_cv2.shape, count, dtype=np.int64)
    m, p = queueing.gamma_rate_points(load.rate_cv2)
    cdf = queueing.modulated_sojourn_cdf(
        bound_s, servers, load.rate_per_s, m, p, load.rate_bin_s, mean_s, arrival_cv2, cs2, delay, weights
    )
    out: FloatArray = 1.0 - cdf
    return out


def largest_passing_rate(
    passes: Callable[[FloatArray], npt.NDArray[np.bool_]], lo: FloatArray, hi: FloatArray, halvings: int
) -> FloatArray:
    """Largest rate per element in [lo, hi] for which `passes` holds, by `halvings` bisection steps.

    `passes` maps an array of rates (req/s) to whether each meets its objectives, and must hold below
    some rate and fail above it; the result is the highest rate seen to pass (`lo` if none did). The
    one bisection behind every capacity-by-count table (prefill, decode and aggregated).
    """
    for _ in range(halvings):
        mid = (lo + hi) / 2.0
        ok = passes(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo


def prefill_capacity_per_s(
    counts: IntArray,
    load: Load,
    perf: ReplicaPerformance,
    ttft_quantile: float,
    ttft_target_s: float,
    extra_delay_s: float = 0.0,
) -> FloatArray:
    """Largest arrival rate each prefill count serves within the TTFT objective (bisection, vectorized)."""
    service, delay, weights = _prefill_times(load, perf, extra_delay_s)
    mean_s, cs2 = queueing.service_moments(service, weights)

    def meets_ttft(rate_per_s: FloatArray) -> npt.NDArray[np.bool_]:
        ttft = queueing.sojourn_quantile_s(
            ttft_quantile, counts, rate_per_s, mean_s, load.arrival_cv2, cs2, delay, weights
        )
        return np.asarray(ttft <= ttft_target_s)

    # Up to the stability limit, counts / mean_s.
    return largest_passing_rate(meets_ttft, np.zeros(counts.shape), counts / mean_s, 40)


def decode_capacity_per_s(
    counts: IntArray, load: Load, perf: ReplicaPerformance, tpot_quantile: float, tpot_target_s: float
) -> FloatArray:
    """Largest arrival rate each decode count serves within the TPOT, KV and batch limits.

    Decode replicas share nothing, so m replicas carry m times what one does (bisection on one).
    """
    one = np.array([1])

    def one_meets(rate_per_s: float) -> bool:
        trial = load.scaled(rate_per_s / max(load.rate_per_s, 1e-12))
        return bool(decode_sizing(one, trial, perf, tpot_quantile, tpot_target_s).feasible[0])

    hi = 1.0
    while one_meets(hi):
        hi *= 2.0
        if hi > 1e7:
            break
    lo = largest_passing_rate(lambda rate: np.array([one_meets(float(rate[0]))]), np.zeros(1), np.array([hi]), 40)
    return counts.astype(np.float64) * float(lo[0])


def _sojourn_quantile(
    counts: IntArray,
    load: Load,
    service_s: FloatArray,
    delay_s: FloatArray,
    weights: FloatArray,
    quantile: float,
) -> FloatArray:
    """q-quantile of W + D over candidate server counts: W from M/G/c with mean service E[S], the rate
    modulated across bins when `load.rate_cv2` > 0 (`queueing.modulated_sojourn_quantile_s`)."""
    mean_s, cs2 = queueing.service_moments(service_s, weights)
    m, p = queueing.gamma_rate_points(load.rate_cv2)
    return queueing.modulated_sojourn_quantile_s(
        quantile, counts, load.rate_per_s, m, p, load.rate_bin_s, mean_s, load.arrival_cv2, cs2, delay_s, weights
    )


def aggregated_prompt_service_s(
    isl_tokens: FloatArray,
    perf: ReplicaPerformance,
    step_s: float,
    room_tokens: float,
    arriving_tokens_per_s: float,
    prompt_share: float,
) -> FloatArray:
    """Seconds from a prompt's first chunk to its first token on an aggregated replica (chunked prefill).

    A prompt of ISL tokens advances at most `room_tokens` (the step budget less the decode batch)
    per step, so it rides in k = ⌈ISL/room⌉ whole steps, and each costs the decode step τ(n̄) plus
    its chunk's GEMMs (issue 16: charging only ISL/room of a step was 2–4× optimistic). The room it
    leaves in those steps takes the prompts that arrive while it rides: a Poisson stream of prompt
    tokens at rate r = (λ/m)·E[ISL] brings r·t tokens in a window t on average (Kleinrock,
    "Queueing Systems" vol. 1, 1975, ch. 2). The window runs from its admission to the start of its
    last step: the rest of the step in flight (half a step, whose mean length is τ(n̄)/(1 − u_p)
    when prompts take u_p of the time) and its own first k − 1 steps, full chunks of `room` tokens.

        window    = ½·τ(n̄)/(1 − u_p) + (k − 1)·(τ(n̄) + b·room)
        service   = k·τ(n̄) + b·ISL + c·ISL² + b·min(k·room − ISL, r·window)

    (u_p is capped at 0.9 in the window.) Issue 16, second pass: the room used to be charged as
    filled in the share u_p of time prompts take, b·(k·room − ISL)·u_p, which at an 8,192-token
    budget and ~230-token prompts is thousands of tokens per step where a few dozen arrive: 1.3–3.6×
    SGLang's published median TTFT (tests/planner/published.py, kind aggregated_ttft).
    """
    steps = np.maximum(np.ceil(isl_tokens / room_tokens), 1.0)
    own_s = perf.prefill.b_s_per_token * isl_tokens + perf.prefill.c_s_per_token2 * isl_tokens * isl_tokens
    window_s = 0.5 * step_s / (1.0 - min(max(prompt_share, 0.0), 0.9)) + (steps - 1.0) * (
        step_s + perf.prefill.b_s_per_token * room_tokens
    )
    joining = np.minimum(steps * room_tokens - isl_tokens, max(arriving_tokens_per_s, 0.0) * window_s)
    service: FloatArray = steps * step_s + own_s + perf.prefill.b_s_per_token * joining
    return service


def aggregated_sizing(
    counts: IntArray,
    load: Load,
    perf: ReplicaPerformance,
    ttft_quantile: float,
    ttft_target_s: float,
    tpot_quantile: float,
    tpot_target_s: float,
    chunk_tokens: int,
) -> PoolSizing:
    """Predicted TTFT, per-request TPOT and per-token ITL quantiles of each candidate count of aggregated replicas.

    The prompts that stall a request's decode are those behind it in the prompt queue when its first
    token comes (the ones that arrived during its own time to first token, FCFS) and those arriving
    during its decode: `tpot.PromptWork.lead_s` is the mean time to first token (Allen–Cunneen mean
    wait of the prompt queue, the work of the group-mates ahead of it under clustered arrivals, and
    the mean of the prompt's own steps). The TTFT quantile does not count those group-mates yet.
    """
    ttft, prompts = _aggregated_prompts(counts, load, perf, chunk_tokens, ttft_quantile)

    def prompts_at(multiplier: float) -> tpot.PromptWork:
        # The prompts at another rate of a modulated load: that rate's stationary lead (no spread of its own).
        if multiplier == 1.0:
            return prompts
        return _aggregated_prompts(counts, replace(load.scaled(multiplier), rate_cv2=0.0), perf, chunk_tokens)[1]

    decode = decode_sizing(counts, load, perf, tpot_quantile, tpot_target_s, prompts_at, chunk_tokens)
    meets_ttft = ttft <= ttft_target_s
    feasible = decode.feasible & meets_ttft
    binding = np.where(decode.binding != Binding.OK, decode.binding, np.where(meets_ttft, Binding.OK, Binding.TTFT))
    return PoolSizing(
        counts=counts,
        ttft_s=ttft,
        tpot_s=decode.tpot_s,
        itl_s=decode.itl_s,
        feasible=feasible,
        binding=binding,
        kv_usage_fraction=decode.kv_usage_fraction,
        batch_quantile=decode.batch_quantile,
        batch_mean=decode.batch_mean,
    )


def _aggregated_prompts(
    counts: IntArray, load: Load, perf: ReplicaPerformance, chunk_tokens: int, ttft_quantile: float | None = None
) -> tuple[FloatArray, tpot.PromptWork]:
    """The TTFT q-quantile (inf unless `ttft_quantile` is given) and the prompt work of each aggregated count."""
    m = counts.astype(np.float64)
    lam = load.rate_per_s / m
    isl, weights = isl_points(load)
    isl_mean = float(np.dot(weights, isl))
    prompt_compute = np.asarray(perf.prefill.service_time_s(isl), dtype=np.float64) - perf.prefill.a_s
    mean_compute, compute_cs2 = queueing.service_moments(prompt_compute, weights)
    u_p = lam * mean_compute
    n_mean = decode_batch_mean(counts, load, perf, u_p)
    room = np.maximum(chunk_tokens - n_mean, 1.0)
    step = np.asarray(perf.decode.step_time_s(n_mean, load.isl_mean_tokens), dtype=np.float64)
    # A group of I arrivals is spread over the replicas by the (least-loaded) router: about I/m of it,
    # and at least one request, reaches a replica (the 8B bursts of 5 on 4 replicas: +14% → −4%).
    group = np.maximum(load.arrival_cv2 / m, 1.0)
    ttft = np.full(m.shape, np.inf)
    lead = np.full(m.shape, np.inf)
    lead_var = np.zeros(m.shape)
    for i in np.flatnonzero(np.isfinite(step)):
        # The queue holds prompt tokens, drained at `room` tokens per step: the work a prompt puts
        # before later ones is its share of the steps (a prompt shares its first and last steps).
        work = isl * (step[i] + perf.prefill.b_s_per_token * room[i]) / room[i] + perf.prefill.c_s_per_token2 * isl**2
        # Its own time to first token counts every step it rides in, after the step in flight when
        # it is admitted (a mean residual of half a step while the replica decodes).
        own = aggregated_prompt_service_s(
            isl, perf, float(step[i]), float(room[i]), float(lam[i] * isl_mean), float(u_p[i])
        )
        lead_in = 0.5 * float(step[i]) * min(1.0, float(n_mean[i]))
        one = counts[i : i + 1]
        if ttft_quantile is not None:
            ttft[i] = _sojourn_quantile(one, load, work, own + lead_in, weights, ttft_quantile)[0]
        mean_s, cs2 = queueing.service_moments(work, weights)
        delayed = float(queueing.erlang_c_vec(one, load.rate_per_s * mean_s)[0])
        theta = float(queueing.decay_rate_per_s(one, load.rate_per_s, mean_s, load.arrival_cv2, cs2)[0])
        own_mean = float(np.dot(weights, own))
        # Group-mates ahead of it: 0…I − 1 of its group, uniformly, each a prompt's work. Allen–Cunneen
        # with c²_a = I is the M^X/G/1 wait of the groups, not the wait behind the request's own group
        # (Burke, Oper. Res. 23, 1975): E[w]·(I − 1)/2 more (4 req/s in bursts of 5 on one replica:
        # mean lead 155 ms against a simulated mean TTFT of 362 ms, 304 ms with it).
        ahead, ahead_var = (group[i] - 1.0) / 2.0, (group[i] ** 2 - 1.0) / 12.0
        lead[i] = delayed / theta + ahead * mean_s + own_mean + lead_in if theta > 0 else np.inf
        # W is 0 with probability 1 − C, else exponential at rate θ: Var W = (2C − C²)/θ².
        lead_var[i] = (
            (2.0 * delayed - delayed**2) / theta**2
            + ahead * cs2 * mean_s**2
            + ahead_var * mean_s**2
            + float(np.dot(weights, (own - own_mean) ** 2))
        )
    second = mean_compute**2 * (1.0 + compute_cs2)  # E[w²] = E[w]²·(1 + c²)
    prompts = tpot.PromptWork(lam, mean_compute, second, u_p, group, lead, lead_var)
    return ttft, prompts
