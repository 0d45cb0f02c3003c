"""Per-request TPOT: the quantile, over requests, of each request's mean time between its output tokens.

Called by `planner.sizing.decode_sizing` for every decode and aggregated pool. TPOT here is what the
engines export per request and what users mean by "TPOT ≤ 50 ms": (e2e − TTFT)/(OSL − 1), vLLM's
`vllm:request_time_per_output_token_seconds`. It is not the per-token inter-token latency (one sample
per token per step, `vllm:inter_token_latency_seconds`), whose quantile is a step-time quantile; a
request's TPOT is an average over its k = OSL − 1 steps, so its spread across requests comes from
what differs between requests' lives, which this module models in two parts:

Batch: a request shares its steps with the others in the batch. Continuous batching is the
birth–death chain of `sizing.size_biased_batch_quantile`, whose stationary law of the others is
NegBin(r, u) (mean r·u/(1 − u), variance r·u/(1 − u)²; an arriving request sees it by PASTA). Averaged
over a request's k steps the variance shrinks by f(k) = 2(x − 1 + e^{−x})/x², x = k/T, the average
of a process with autocorrelation e^{−t/T} over a window of k. T is the integrated autocorrelation
of the batch in steps: the stationary M/G/∞ autocovariance is λ·E[(S − t)⁺] (Eick, Massey & Whitt,
"The physics of the Mt/G/∞ queue", Oper. Res. 41, 1993), whose integral over its value at 0 is
E[S²]/(2·E[S]) = OSL·(1 + c²_OSL)/2. The life-averaged batch is taken as normal with that mean and
variance (plus the request itself); its step time τ is linear in it.

Stalls (aggregated pools only): with chunked prefill every step of the batch also carries waiting
prompt tokens, so each prompt prefilled on the replica during a request's life lengthens that life
by the prompt's compute w = b·ISL + c·ISL². The life is therefore a busy period of the replica's
prompt work (`_stall`): it starts with the request's own k steps and the prompts already queued
behind it when its first token comes (those that arrived during its time to first token), and every
prompt arriving meanwhile extends it. Its mean restores the mean TPOT τ̄/(1 − u_p) of the decode
model (u_p the share of GPU time prompts take); its spread, amplified by 1/(1 − u_p)³ as a busy
period's is, is why short requests that meet a burst of prompts have a TPOT many times the step
time. S is 0 with the probability that no prompt comes; otherwise it is taken as lognormal with the
conditional mean and variance (heavy-tailed like the prompt work).

A request's TPOT is τ(batch) + S/k; its q-quantile over requests is found by bisection on the
mixture CDF over output lengths (16 equiprobable lognormal points of OSL, each request weighted
alike), batch (5-point Gauss–Hermite) and stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from tokenscale.planner.queueing import normal_cdf

FloatArray = npt.NDArray[np.float64]

OSL_POINTS = 16
# Probabilists' Gauss–Hermite nodes and weights (E[g(Z)] for Z ~ N(0, 1)) at 5 points.
_OSL_Z = np.array([NormalDist().inv_cdf((i + 0.5) / OSL_POINTS) for i in range(OSL_POINTS)])  # equiprobable
_HERMITE_Z = np.array([-2.8569700138728056, -1.3556261799742659, 0.0, 1.3556261799742659, 2.8569700138728056])
_HERMITE_W = np.array(
    [0.011257411327720691, 0.22207592200561266, 0.5333333333333333, 0.22207592200561266, 0.011257411327720691]
)
_BISECTIONS = 16


@dataclass(frozen=True)
class PromptWork:
    """Per-replica prompt arrivals and the moments of their compute on an aggregated replica."""

    rate_per_s: FloatArray  # λ/m per candidate
    mean_s: float  # E[w]
    second_moment_s2: float  # E[w²]
    share: FloatArray  # u_p per candidate
    dispersion: float = 1.0  # index of dispersion of arrival counts (1: Poisson)
    lead_s: FloatArray | None = None  # mean time from a request's arrival to its first token, per candidate
    lead_var_s2: FloatArray | None = None  # its variance


def output_steps(osl_mean_tokens: float, osl_cv2: float) -> FloatArray:
    """k = OSL − 1 (at least 1) at 16 equiprobable points of a lognormal OSL with the given mean and c²."""
    sigma = math.sqrt(math.log1p(max(osl_cv2, 0.0)))
    mu = math.log(max(osl_mean_tokens, 1.0)) - sigma * sigma / 2.0
    steps: FloatArray = np.maximum(np.exp(mu + sigma * _OSL_Z) - 1.0, 1.0)
    return steps


def averaging_factor(steps: FloatArray, correlation_steps: float) -> FloatArray:
    """f(k) = 2(x − 1 + e^{−x})/x², x = k/T: the variance of a k-step average over the variance of one step."""
    x = np.maximum(steps / max(correlation_steps, 1e-9), 1e-9)
    out: FloatArray = np.where(x < 1e-4, 1.0 - x / 3.0, 2.0 * (x - 1.0 + np.exp(-x)) / (x * x))
    return out


def request_tpot_quantile_s(
    q: float,
    alpha_s: float,
    per_sequence_s: float,
    utilization: FloatArray,
    osl_mean_tokens: float,
    osl_cv2: float,
    prompts: PromptWork | None = None,
) -> FloatArray:
    """q-quantile over requests of per-request TPOT, per candidate (inf where u ≥ 1 or not finite).

    `per_sequence_s` is β + γ·L (a step's cost per sequence in the batch), `utilization` the chain's
    u per candidate, so the others in the batch are NegBin(α/per_sequence_s, u).
    """
    u = np.asarray(utilization, dtype=np.float64)
    valid = np.isfinite(u) & (u >= 0) & (u < 1)
    if prompts is not None:
        valid &= np.isfinite(prompts.share) & (prompts.share < 1)
        if prompts.lead_s is not None:
            valid &= np.isfinite(prompts.lead_s)
    safe = np.where(valid, u, 0.0)
    r = alpha_s / per_sequence_s
    k = output_steps(osl_mean_tokens, osl_cv2)[None, :]  # (1, K)
    others_mean = (r * safe / (1.0 - safe))[:, None]
    others_var = (r * safe / (1.0 - safe) ** 2)[:, None]
    correlation = osl_mean_tokens * (1.0 + max(osl_cv2, 0.0)) / 2.0
    step_mean = alpha_s + per_sequence_s * (1.0 + others_mean)  # (M, 1)
    step_sd = per_sequence_s * np.sqrt(others_var * averaging_factor(k, correlation))  # (M, K)
    step_sd = np.maximum(step_sd, 1e-9 * step_mean)
    inv_sd = 1.0 / step_sd
    weight = 1.0 / k.size
    lo = np.full(u.shape, alpha_s)  # every step takes at least α
    hi = np.max(step_mean + 6.0 * step_sd, axis=1)
    iterations = _BISECTIONS
    if prompts is None or prompts.mean_s <= 0:
        # A mixture's quantile lies between its components' quantiles, here normal ones: a bracket
        # a few percent wide, which 10 halvings narrow to ~1e-5 of the step time.
        z = NormalDist().inv_cdf(min(max(q, 1e-12), 1.0 - 1e-12))
        lo = np.min(step_mean + z * step_sd, axis=1)
        hi = np.max(step_mean + z * step_sd, axis=1)
        iterations = 10

        def cdf(t: FloatArray) -> FloatArray:
            out: FloatArray = weight * normal_cdf((t[:, None] - step_mean) * inv_sd).sum(axis=1)
            return out

    else:
        no_stall, log_mu, log_sigma = _stall(prompts, k, step_mean)
        # Stall part: P(τ + S/k ≤ t) = E_Z[P(S ≤ k·(t − τ̄ − sd·Z))], S | N ≥ 1 lognormal, Z at the nodes.
        shift = step_mean[..., None] + step_sd[..., None] * _HERMITE_Z  # (M, K, H)
        steps = k[..., None]
        log_mu_h, inv_log_sigma = log_mu[..., None], 1.0 / log_sigma[..., None]
        stall_weight = (1.0 - no_stall) * weight

        def cdf(t: FloatArray) -> FloatArray:
            clear = no_stall * normal_cdf((t[:, None] - step_mean) * inv_sd)
            room = np.maximum(steps * (t[:, None, None] - shift), 1e-300)
            stalled = normal_cdf((np.log(room) - log_mu_h) * inv_log_sigma) @ _HERMITE_W
            out: FloatArray = weight * clear.sum(axis=1) + (stall_weight * stalled).sum(axis=1)
            return out

        hi = np.maximum(hi, np.max(step_mean + np.exp(log_mu + 6.0 * log_sigma) / k, axis=1))
    # Bisection on ln t: the bracket can span four decades (a rare long stall), and halving its
    # logarithm 16 times reaches a relative precision of 2e-4 even then (far finer for narrower ones).
    lo = np.maximum(lo, 1e-12)
    for _ in range(iterations):
        mid = np.sqrt(lo * hi)
        below = cdf(mid) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(valid, hi, np.inf)


def _stall(prompts: PromptWork, k: FloatArray, step_mean: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """P(no stall in a life), and ln-mean and ln-sd of the stall S given one, per (candidate, k).

    The request's decode life is a busy period of the replica's prompt work: it starts with the
    request's own k decode steps (k·τ̄) plus Q, the prompts already queued behind it when its first
    token comes, and every prompt arriving meanwhile (rate λ/m, compute w, ρ = u_p) extends it. A
    busy period of an M/G/1 queue started by work v lasts v/(1 − ρ) on average with variance
    v·λ·E[w²]/(1 − ρ)³ (Takács, "Introduction to the Theory of Queues", 1962, ch. 1; Kleinrock vol. 1
    §5.8), so S = D − k·τ̄ has mean (ρ·k·τ̄ + E[Q])/(1 − ρ) and variance
    (k·τ̄ + E[Q])·λ·E[w²]/(1 − ρ)³ + Var(Q)/(1 − ρ)². Q: Poisson(λ/m · TTFT) prompts, TTFT varying
    from request to request (`PromptWork.lead_s`, `lead_var_s2`), plus the request's own group-mates.
    Clustered arrivals (index of dispersion I): prompts come in groups of about I, which multiplies
    the count variance by I (E[w²] becomes E[w²] + (I − 1)·E[w]²), none comes with probability
    e^{−μ/I}, and a request arriving in a group is followed by 0…I − 1 of its group-mates, uniformly
    (the customer's view of a batch arrival, as in the M^X/G/1 queue: Burke, Oper. Res. 23, 1975).
    """
    rho = np.clip(np.where(np.isfinite(prompts.share), prompts.share, 0.0), 0.0, 0.999)[:, None]
    rate = np.where(np.isfinite(prompts.rate_per_s), prompts.rate_per_s, 0.0)[:, None]
    lead = np.zeros_like(rate) if prompts.lead_s is None else np.asarray(prompts.lead_s, dtype=np.float64)[:, None]
    lead_var = 0.0 if prompts.lead_var_s2 is None else np.asarray(prompts.lead_var_s2, dtype=np.float64)[:, None]
    group = max(prompts.dispersion, 1.0)
    w1 = prompts.mean_s
    w2 = max(prompts.second_moment_s2, w1 * w1) + (group - 1.0) * w1 * w1  # per prompt, groups folded in
    decode = k * step_mean  # the request's own decode steps, k·τ̄
    mates_mean, mates_var = (group - 1.0) / 2.0, (group * group - 1.0) / 12.0
    queued_mean = (rate * lead + mates_mean) * w1
    queued_var = rate * lead * w2 + mates_var * w1 * w1 + rate * rate * lead_var * w1 * w1
    mean = np.maximum((rho * decode + queued_mean) / (1.0 - rho), 1e-15)
    variance = (decode + queued_mean) * rate * w2 / (1.0 - rho) ** 3 + queued_var / (1.0 - rho) ** 2
    no_stall = np.exp(-rate * (lead + decode) / group) / group
    busy = 1.0 - no_stall  # P(S > 0)
    with np.errstate(invalid="ignore", divide="ignore"):  # an unstable candidate's infinite lead: masked later
        mean_given = mean / busy
        second_given = (variance + mean * mean) / busy
        sigma2 = np.log(np.maximum(second_given / (mean_given * mean_given), 1.0 + 1e-12))
        return no_stall, np.log(mean_given) - sigma2 / 2.0, np.sqrt(sigma2)
