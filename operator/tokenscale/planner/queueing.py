"""Queueing formulas the sizing uses: Erlang B/C, M/G/c waiting-time tails, exact M/D/1, sojourn quantiles.

Called by `planner.sizing` (vectorized over candidate server counts: every function that takes
`servers` accepts an array of counts and answers for all of them at once) and by the tests that
check the formulas against published values, an exact state-dependent queue and a brute-force
simulation (tests/planner/test_queueing.py). Pure numpy and the standard library.

Units: times in seconds (`_s`), rates per second (`_per_s`); `offered_load` a = λ·E[S] in Erlangs;
`ca2`, `cs2` are squared coefficients of variation (variance / mean²) of the inter-arrival and
the service times.

References
- Erlang B by its recursion B(0) = 1, B(k) = a·B(k−1)/(k + a·B(k−1)), and Erlang C from it,
  C = B/(1 − ρ(1 − B)) with ρ = a/c (Kleinrock, "Queueing Systems", vol. 1, 1975, §3.4–3.6;
  the recursion only multiplies and divides numbers in [0, 1] and stays exact for thousands of
  servers where the factorial form overflows).
- M/M/c waiting time: P(W > t) = C·e^{−(cμ − λ)t} (Kleinrock §3.6). For general arrivals and
  service, the Allen–Cunneen / Kingman scaling stretches the decay time by (c_a² + c_s²)/2:
  P(W > t) ≈ C·e^{−θt}, θ = (cμ − λ)·2/(c_a² + c_s²), whose mean C/θ is the Allen–Cunneen mean
  wait (Allen, "Probability, Statistics and Queueing Theory", 2nd ed., 1990, §6.5; Kingman 1961).
  It is exact for M/M/c and gives the Pollaczek–Khinchine mean for M/G/1.
- Delay probability under bursty arrivals: Halfin & Whitt (Oper. Res. 29, 1981, Thm. 4),
  `delay_probability`.
- Slowly modulated arrivals: the pointwise stationary approximation (Green & Kolesar, Management
  Science 37, 1991), `modulated_sojourn_cdf`.
- M/D/1 waiting time (Erlang 1909; Crommelin 1932), with ρ = λD:
  P(W ≤ t) = (1 − ρ) Σ_{k=0}^{⌊t/D⌋} [λ(kD − t)]^k / k! · e^{−λ(kD − t)}.
  Its mean is ρD/(2(1 − ρ)) (Pollaczek–Khinchine), so DistServe's mean TTFT of a prefill
  instance, modelled as M/D/1, is D + λD²/(2(1 − λD)) (Zhong et al., OSDI 2024, §4.1).
  The sum alternates in sign and its terms grow like e^{λt}, so float64 loses every digit once
  λt passes ~35. `md1_wait_cdf` sums it directly while the largest term is below e^10 (at most
  ~4 of 16 digits lost), and beyond that uses the exact asymptotic tail
  P(W > t) ≈ (1 − ρ)/(ρe^{ηD} − 1)·e^{−ηt}, η > 0 the root of λ(e^{ηD} − 1) = η (the pole of
  the Pollaczek–Khinchine transform nearest the origin; Cramér–Lundberg). The next poles decay
  faster by a margin that makes the switch error below 1e-10 (measured against 80-digit decimal
  arithmetic for 0.01 ≤ ρ ≤ 0.999; the test suite repeats the check).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Halvings of the modulated quantile's bracket before its final secant step.
_MODULATED_STEPS = 8
# The rate's c² across bins that `gamma_rate_points` takes (beyond, the bins are mostly empty and a
# few carry everything: the mixture is no longer a description of the load).
MAX_RATE_CV2 = 4.0
# Bisection steps of the M/D/1 quantile: each halves the bracket; 64 reach float64 resolution.
_BISECTIONS = 64
# `md1_wait_cdf` sums Erlang's series while its largest term is below e^_MD1_MAX_LOG_TERM.
_MD1_MAX_LOG_TERM = 10.0
# ... and while it has at most this many terms (the asymptotic tail is exact to float64 long before).
_MD1_MAX_TERMS = 4096
# Work per block of times: at most this many rows, and rows × terms at most this many cells.
_MD1_BLOCK_ROWS = 4096
_MD1_BLOCK_CELLS = 1 << 20


# --- load -----------------------------------------------------------------------------------------


def utilization(servers: npt.ArrayLike, arrival_rate_per_s: npt.ArrayLike, mean_service_s: npt.ArrayLike) -> FloatArray:
    """ρ = λ·E[S]/c: the fraction of time a server is busy (≥ 1 means the queue grows without bound)."""
    c = np.asarray(servers, dtype=np.float64)
    out: FloatArray = (
        np.asarray(arrival_rate_per_s, dtype=np.float64) * np.asarray(mean_service_s, dtype=np.float64) / c
    )
    return out


def is_stable(servers: npt.ArrayLike, arrival_rate_per_s: npt.ArrayLike, mean_service_s: npt.ArrayLike) -> BoolArray:
    """ρ < 1: the queue has a steady state (its waiting times are finite)."""
    out: BoolArray = utilization(servers, arrival_rate_per_s, mean_service_s) < 1.0
    return out


def service_moments(values_s: npt.ArrayLike, weights: npt.ArrayLike) -> tuple[float, float]:
    """(E[S] in seconds, c_s² = Var[S]/E[S]²) of a discrete service-time distribution (weights normalized)."""
    v = np.asarray(values_s, dtype=np.float64)
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    mean_s = float(np.dot(p, v))
    cs2 = float(np.dot(p, (v - mean_s) ** 2)) / mean_s**2 if mean_s > 0 else 0.0
    return mean_s, cs2


# --- Erlang B and C ---------------------------------------------------------------------------


def erlang_b_vec(servers: npt.ArrayLike, offered_load: npt.ArrayLike) -> FloatArray:
    """Erlang B (blocking probability of M/M/c/c) for arrays of server counts and loads, broadcast together.

    B(0) = 1, B(k) = a·B(k−1)/(k + a·B(k−1)), run once up to the largest count and read at each.
    """
    c = np.asarray(servers, dtype=np.int64)
    a = np.asarray(offered_load, dtype=np.float64)
    if np.any(c < 0):
        raise ValueError("servers must be ≥ 0")
    if np.any(a < 0) or np.any(np.isnan(a)):
        raise ValueError("offered_load must be ≥ 0")
    c, a = np.broadcast_arrays(c, a)
    top = int(c.max(initial=0))
    if a.size and a.min() == a.max():
        # One load for every count (the sizing case): run the recursion once on floats, read each count.
        load = float(a.flat[0])
        table = [1.0]
        for k in range(1, top + 1):
            step = load * table[-1]
            table.append(step / (k + step) if math.isfinite(step) else math.nan)
        scalar_out: FloatArray = np.asarray(table, dtype=np.float64)[c.ravel()].reshape(c.shape)
        return scalar_out
    b = np.ones(c.shape, dtype=np.float64)
    out = np.ones(c.shape, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # a = inf gives nan, read only where a ≥ c (masked by callers)
        for k in range(1, top + 1):
            b = a * b / (k + a * b)
            out = np.where(c == k, b, out)
    return out


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B for one server count and load a = λ/μ Erlangs (see `erlang_b_vec`)."""
    return float(erlang_b_vec(np.array([servers]), offered_load)[0])


def erlang_c_vec(servers: npt.ArrayLike, offered_load: npt.ArrayLike) -> FloatArray:
    """Erlang C (probability that an arrival waits in M/M/c) for arrays of counts and loads, broadcast.

    C = B/(1 − ρ(1 − B)), ρ = a/c, from the Erlang B recursion; 1.0 where a ≥ c (unstable: every
    arrival eventually waits; this includes c = 0) and 0.0 where a = 0 < c.
    """
    c = np.asarray(servers, dtype=np.int64)
    b = erlang_b_vec(np.maximum(c, 0), offered_load)
    c, a = np.broadcast_arrays(c, np.asarray(offered_load, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = a / c
    stable = (c >= 1) & (rho < 1.0)
    value = b / (1.0 - np.where(stable, rho, 0.0) * (1.0 - b))
    out: FloatArray = np.where(stable, np.clip(value, 0.0, 1.0), 1.0)
    return out


def _halfin_whitt_alpha(beta: FloatArray) -> FloatArray:
    """α(β) = [1 + βΦ(β)/φ(β)]⁻¹: the Halfin–Whitt limit of the delay probability (1 at β ≤ 0)."""
    b = np.maximum(beta, 0.0)
    phi = np.exp(-0.5 * b * b) / math.sqrt(2.0 * math.pi)
    big_phi = normal_cdf(b)
    with np.errstate(over="ignore", divide="ignore"):
        out: FloatArray = 1.0 / (1.0 + b * big_phi / phi)
    return out


def normal_cdf(z: FloatArray) -> FloatArray:
    """Φ(z), the standard normal CDF, vectorized (from `_erf`)."""
    out: FloatArray = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    return out


def _erf(x: FloatArray) -> FloatArray:
    """erf(x), vectorized: Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), odd in x."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: FloatArray = np.sign(x) * (1.0 - poly * np.exp(-a * a))
    return out


def delay_probability(servers: npt.ArrayLike, offered_load: npt.ArrayLike, ca2: npt.ArrayLike) -> FloatArray:
    """P(W > 0) with c servers, load a Erlangs and arrivals of burstiness c_a²: Erlang C, stretched for c_a² ≠ 1.

    Halfin & Whitt ("Heavy-traffic limits for queues with many exponential servers", Oper. Res. 29,
    1981, Thm. 4): in GI/M/c with β = (c − a)/√c, P(W > 0) → α(β/√z), z = (1 + c_a²)/2,
    α(x) = [1 + xΦ(x)/φ(x)]⁻¹. Erlang C is exact for Poisson arrivals at any c, while the limit is
    coarse at small c and light load (c = 8, ρ = 0.28: α(β) = 0.024, Erlang C 0.003). So Erlang C keeps
    the Poisson level and the limit supplies what burstiness adds: P = C + α(β/√z) − α(β), capped at
    1 (exactly C at c_a² = 1). Bursty arrivals raise the chance of waiting far more than they
    stretch the wait: at c = 8, ρ = 0.28, c_a² = 6.3 this gives 0.17, where Erlang C says 0.003 and a
    replay of the Azure 2023 conversation trace through the simulator showed 0.18.
    """
    c = np.asarray(servers, dtype=np.float64)
    a = np.asarray(offered_load, dtype=np.float64)
    base = erlang_c_vec(np.asarray(servers, dtype=np.int64), a)
    z = (1.0 + np.maximum(np.asarray(ca2, dtype=np.float64), 0.0)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(c > 0, (c - a) / np.sqrt(np.maximum(c, 1.0)), 0.0)
    added = np.maximum(_halfin_whitt_alpha(beta / np.sqrt(np.maximum(z, 1.0))) - _halfin_whitt_alpha(beta), 0.0)
    out: FloatArray = np.minimum(1.0, base + added)
    return out


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c with `servers` servers and load a = λ/μ Erlangs.

    1.0 when a ≥ servers. Exact for any count (see `erlang_c_vec`).
    """
    if servers < 1:
        raise ValueError(f"servers must be ≥ 1, got {servers}")
    if not offered_load >= 0:
        raise ValueError(f"offered_load must be ≥ 0, got {offered_load}")
    return float(erlang_c_vec(np.array([servers]), offered_load)[0])


# --- M/G/c waiting time (Allen–Cunneen / Kingman) -------------------------------------------------


def decay_rate_per_s(
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike,
    cs2: npt.ArrayLike,
) -> FloatArray:
    """θ = (cμ − λ)·2/(c_a² + c_s²) in 1/s: the decay rate of the M/G/c waiting-time tail (≤ 0 if unstable)."""
    c = np.asarray(servers, dtype=np.float64)
    mu = 1.0 / np.asarray(mean_service_s, dtype=np.float64)
    scv = np.maximum(np.asarray(ca2, dtype=np.float64) + np.asarray(cs2, dtype=np.float64), 1e-9)
    out: FloatArray = (c * mu - np.asarray(arrival_rate_per_s, dtype=np.float64)) * 2.0 / scv
    return out


def mgc_wait_tail(
    t_s: npt.ArrayLike,
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike = 1.0,
    cs2: npt.ArrayLike = 1.0,
) -> FloatArray:
    """P(W > t) ≈ C(c, λE[S])·exp(−(cμ − λ)·t·2/(c_a² + c_s²)) for M/G/c (Allen–Cunneen / Kingman).

    Every argument broadcasts (e.g. `t_s[:, None]` against an array of counts gives a grid);
    1.0 where the queue is unstable. Exact for M/M/c (c_a² = c_s² = 1).
    """
    s = np.asarray(mean_service_s, dtype=np.float64)
    lam = np.asarray(arrival_rate_per_s, dtype=np.float64)
    wait_prob = erlang_c_vec(servers, lam * s)
    theta = decay_rate_per_s(servers, lam, s, ca2, cs2)
    t = np.asarray(t_s, dtype=np.float64)
    out: FloatArray = np.where(
        theta > 0, np.where(t < 0, 1.0, wait_prob * np.exp(-np.maximum(theta, 0.0) * np.maximum(t, 0.0))), 1.0
    )
    return out


def mean_wait_mgc_s(
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike = 1.0,
    cs2: npt.ArrayLike = 1.0,
) -> FloatArray:
    """Allen–Cunneen mean wait in seconds: C(c, a)/(cμ − λ) · (c_a² + c_s²)/2 (inf where unstable)."""
    s = np.asarray(mean_service_s, dtype=np.float64)
    lam = np.asarray(arrival_rate_per_s, dtype=np.float64)
    theta = decay_rate_per_s(servers, lam, s, ca2, cs2)
    wait_prob = erlang_c_vec(servers, lam * s)
    out: FloatArray = np.where(theta > 0, wait_prob / np.where(theta > 0, theta, 1.0), np.inf)
    return out


# --- sojourn time = wait + service (+ fixed delays) ------------------------------------------------


def _mixture_cdf(t: FloatArray, wait_prob: FloatArray, theta: FloatArray, d: FloatArray, p: FloatArray) -> FloatArray:
    """P(W + D ≤ t) row by row: t (n, m), wait_prob and theta (n, 1), d and p (n, k) → (n, m).

    W has an atom 1 − C at 0 and density C·θe^{−θw}; D is discrete, independent of W:
    P(W + D ≤ t) = Σ_i p_i · 1{t ≥ d_i} · (1 − C·e^{−θ(t − d_i)}).
    """
    gap = t[:, :, None] - d[:, None, :]
    inside = np.where(gap >= 0, 1.0 - wait_prob[:, :, None] * np.exp(-theta[:, :, None] * np.maximum(gap, 0.0)), 0.0)
    out: FloatArray = np.einsum("nmk,nk->nm", inside, p)
    return out


def _prepare(
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike,
    cs2: npt.ArrayLike,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray, BoolArray, FloatArray, FloatArray]:
    """Per-count (C, θ, stable) as column vectors and the delay distribution as (n, k) rows."""
    c = np.atleast_1d(np.asarray(servers, dtype=np.int64))
    n = c.size
    lam = np.broadcast_to(np.asarray(arrival_rate_per_s, dtype=np.float64), c.shape)
    s = np.broadcast_to(np.asarray(mean_service_s, dtype=np.float64), c.shape)
    wait_prob = delay_probability(c, lam * s, ca2)
    theta = decay_rate_per_s(c, lam, s, ca2, cs2)
    stable = theta > 0
    d = np.asarray(delay_values_s, dtype=np.float64)
    d = np.broadcast_to(d if d.ndim == 2 else d[None, :], (n, d.shape[-1]))
    p = np.asarray(delay_weights, dtype=np.float64)
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("delay_weights must be finite and ≥ 0")
    p = p / p.sum(axis=-1, keepdims=True)
    p = np.broadcast_to(p if p.ndim == 2 else p[None, :], (n, d.shape[-1]))
    th = np.where(stable, theta, 1.0)[:, None]
    return wait_prob[:, None], th, stable, d, p


def sojourn_cdf(
    t_s: npt.ArrayLike,
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike,
    cs2: npt.ArrayLike,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> FloatArray:
    """P(W + D ≤ t) for each count (rows) at each time `t_s` (columns); 0 where unstable.

    Same model and arguments as `sojourn_quantile_s`.
    """
    wait_prob, th, stable, d, p = _prepare(
        servers, arrival_rate_per_s, mean_service_s, ca2, cs2, delay_values_s, delay_weights
    )
    t = np.broadcast_to(np.atleast_1d(np.asarray(t_s, dtype=np.float64))[None, :], (stable.size, np.size(t_s)))
    out: FloatArray = np.where(stable[:, None], _mixture_cdf(t, wait_prob, th, d, p), 0.0)
    return out


def sojourn_quantile_s(
    quantile: float,
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: npt.ArrayLike,
    cs2: npt.ArrayLike,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> FloatArray:
    """q-quantile of W + D in seconds, one per candidate server count (inf where unstable).

    W is the M/G/c wait of `mgc_wait_tail`: an atom of mass 1 − C at zero and an exponential tail
    of mass C and rate θ = (cμ − λ)·2/(c_a² + c_s²). D is the time after the wait — the request's
    own service plus any fixed delays — as a discrete distribution (`delay_values_s`,
    `delay_weights`), independent of W under FCFS:

        P(W + D ≤ t) = Σ_i p_i · 1{t ≥ d_i} · (1 − C·e^{−θ(t − d_i)}).

    Inverted in closed form, piece by piece: with the d_i sorted, on [d_j, d_{j+1}) the CDF is
    P_j − C·R_j·e^{−θ(t − d_j)}, P_j = Σ_{i≤j} p_i and R_j = Σ_{i≤j} p_i·e^{−θ(d_j − d_i)} ≤ P_j
    (accumulated in log space, so no term overflows), which is continuous and increasing. The
    quantile lies on the first piece whose CDF reaches q before d_{j+1}: at d_j itself when the
    CDF jumps over q there, else at d_j + ln(C·R_j/(P_j − q))/θ. No iteration, and exact up to
    rounding (within 1e-12 of a 64-step bisection of the CDF).
    `mean_service_s` and `cs2` describe the service that occupies a server (they set C and θ).
    `servers` is an array of counts; `arrival_rate_per_s` and `mean_service_s` a scalar or one per
    count; `delay_values_s` / `delay_weights` 1-D (shared) or 2-D (one row per count).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    wait_prob, th, stable, d, p = _prepare(
        servers, arrival_rate_per_s, mean_service_s, ca2, cs2, delay_values_s, delay_weights
    )
    return _quantile_prepared(quantile, wait_prob, th, stable, d, p)


def _quantile_prepared(
    quantile: float, wait_prob: FloatArray, th: FloatArray, stable: BoolArray, d: FloatArray, p: FloatArray
) -> FloatArray:
    """The inversion of `sojourn_quantile_s` from `_prepare`'s per-count values (shared with `_Modulated`)."""
    if np.any(d[:, 1:] < d[:, :-1]):
        order = np.argsort(d, axis=1, kind="stable")
        d = np.take_along_axis(d, order, axis=1)
        p = np.take_along_axis(p, order, axis=1)
    mass = np.cumsum(p, axis=1)
    scaled = th * d
    # ln(C·R_j). log 0 is −inf: a zero weight adds nothing, and C = 0 (no load) leaves the CDF P_j.
    with np.errstate(divide="ignore"):
        log_cr = np.log(wait_prob) + np.logaddexp.accumulate(np.log(p) + scaled, axis=1) - scaled
    next_d = np.concatenate((d[:, 1:], np.full((d.shape[0], 1), np.inf)), axis=1)
    at_start = mass - np.exp(log_cr)  # the CDF at d_j
    before_next = mass - np.exp(log_cr - th * (next_d - d))  # ... and just before d_{j+1}
    rows = np.arange(d.shape[0])
    piece = np.argmax(before_next >= quantile, axis=1)

    def pick(values: FloatArray) -> FloatArray:
        picked: FloatArray = values[rows, piece]
        return picked

    start, end, gap = pick(d), pick(next_d), pick(mass) - quantile
    with np.errstate(divide="ignore", invalid="ignore"):  # P_j = q: the CDF jumps over q at d_j, no root
        inside = start + (pick(log_cr) - np.log(np.maximum(gap, 0.0))) / th[:, 0]
    hit = np.where(pick(at_start) >= quantile, start, np.clip(inside, start, end))
    out: FloatArray = np.where(stable, hit, np.inf)
    return out


def service_sojourn_quantile_s(
    quantile: float,
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    service_values_s: npt.ArrayLike,
    service_weights: npt.ArrayLike,
    ca2: float = 1.0,
    extra_delay_s: float = 0.0,
) -> FloatArray:
    """q-quantile of wait + service (+ a fixed delay) from a discrete service-time distribution.

    The common case of `sojourn_quantile_s`: E[S] and c_s² come from the same distribution that
    is added after the wait (e.g. s(ISL) at the quadrature points of the ISL distribution).
    """
    mean_s, cs2 = service_moments(service_values_s, service_weights)
    delay = np.asarray(service_values_s, dtype=np.float64) + extra_delay_s
    return sojourn_quantile_s(quantile, servers, arrival_rate_per_s, mean_s, ca2, cs2, delay, service_weights)


# --- M/D/1, exact --------------------------------------------------------------------------------


def md1_mean_wait_s(arrival_rate_per_s: float, service_s: float) -> float:
    """Pollaczek–Khinchine mean wait of M/D/1 in seconds: ρD/(2(1 − ρ)), ρ = λD; inf when ρ ≥ 1."""
    rho = arrival_rate_per_s * service_s
    return math.inf if rho >= 1.0 else rho * service_s / (2.0 * (1.0 - rho))


def md1_mean_sojourn_s(arrival_rate_per_s: float, service_s: float) -> float:
    """Mean wait + service of M/D/1: D + λD²/(2(1 − λD)) (DistServe, Zhong et al., OSDI 2024, §4.1)."""
    return service_s + md1_mean_wait_s(arrival_rate_per_s, service_s)


def md1_decay_rate_per_s(arrival_rate_per_s: float, service_s: float) -> float:
    """η > 0 with λ(e^{ηD} − 1) = η: the exact exponential decay rate of the M/D/1 waiting-time tail.

    Newton's method from the right of the root: f(y) = ρ(e^y − 1) − y is convex with f(0) = 0 and
    f'(0) = ρ − 1 < 0, so the iterates decrease monotonically onto the positive root y = ηD.
    """
    rho = arrival_rate_per_s * service_s
    if not 0.0 < rho < 1.0:
        raise ValueError(f"M/D/1 needs 0 < λD < 1, got {rho}")
    y = 1.0
    while rho * math.expm1(y) - y <= 0.0:
        y *= 2.0
    for _ in range(200):
        step = (rho * math.expm1(y) - y) / (rho * math.exp(y) - 1.0)
        y -= step
        if step <= 1e-15 * y:
            break
    return y / service_s


def md1_wait_cdf(t_s: npt.ArrayLike, arrival_rate_per_s: float, service_s: float) -> FloatArray:
    """P(W ≤ t) of M/D/1 (Erlang's formula), for an array of times in seconds; 0 everywhere when ρ ≥ 1.

    Summed directly in float64 while its largest term stays below e^10, and taken from the exact
    asymptotic tail (module docstring) beyond; both agree with 80-digit arithmetic to 1e-10. The
    largest term grows with t (each term does, and terms are added), so the times are taken in
    increasing order in blocks and the series stops at the first block that needs the tail.
    """
    lam, d = arrival_rate_per_s, service_s
    rho = lam * d
    t = np.asarray(t_s, dtype=np.float64)
    if rho >= 1.0:
        return np.zeros(t.shape)
    if rho <= 0.0:
        out0: FloatArray = np.where(t >= 0, 1.0, 0.0)
        return out0
    y = md1_decay_rate_per_s(lam, d) * d
    tail_scale = (1.0 - rho) / (y + rho - 1.0)  # (1 − ρ)/(ρe^y − 1), using ρe^y = ρ + y at the root
    x = t.ravel() / d
    out = np.where(x < 0, 0.0, 1.0 - tail_scale * np.exp(-y * np.maximum(x, 0.0)))
    order = np.flatnonzero((x >= 0) & (x < _MD1_MAX_TERMS))
    order = order[np.argsort(x[order], kind="stable")]
    start = 0
    while start < order.size:
        ahead = math.floor(x[order[min(start + _MD1_BLOCK_ROWS, order.size) - 1]])
        rows = max(1, min(_MD1_BLOCK_ROWS, _MD1_BLOCK_CELLS // (ahead + 1)))
        block = order[start : start + rows]
        sums, direct = _md1_series(x[block], rho)
        out[block[direct]] = np.clip((1.0 - rho) * sums[direct], 0.0, 1.0)
        if not np.all(direct):
            break
        start += rows
    result: FloatArray = out.reshape(t.shape)
    return result


def _md1_series(x: FloatArray, rho: float) -> tuple[FloatArray, BoolArray]:
    """Erlang's series Σ_{k ≤ x} (−ρ(x − k))^k/k!·e^{ρ(x − k)} for each x ≥ 0 (in units of D), and
    whether its largest term stays below e^_MD1_MAX_LOG_TERM (where float64 keeps 1e-10)."""
    kmax = math.floor(float(x.max()))
    k = np.arange(kmax + 1, dtype=np.float64)
    gap = x[:, None] - k[None, :]
    inside = gap >= 0
    gap = np.where(inside, gap, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 at gap = 0: a zero term (k > 0)
        log_abs = np.where(k > 0, k * np.log(rho * gap), 0.0) + rho * gap - _log_factorials(kmax)
    log_abs = np.where(inside, log_abs, -np.inf)
    direct: BoolArray = log_abs.max(axis=1) <= _MD1_MAX_LOG_TERM
    sums: FloatArray = (np.where(k % 2 == 0, 1.0, -1.0) * np.exp(log_abs)).sum(axis=1)
    return sums, direct


def _log_factorials(kmax: int) -> FloatArray:
    out = np.zeros(kmax + 1)
    if kmax >= 1:
        out[1:] = np.cumsum(np.log(np.arange(1, kmax + 1, dtype=np.float64)))
    return out


def md1_sojourn_quantile_s(
    quantile: float, arrival_rate_per_s: float, service_s: float, extra_delay_s: float = 0.0
) -> float:
    """Exact q-quantile of wait + D (+ a fixed delay) of M/D/1, by bisection on `md1_wait_cdf`; inf if ρ ≥ 1."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    rho = arrival_rate_per_s * service_s
    if rho >= 1.0:
        return math.inf
    offset = service_s + extra_delay_s
    if 1.0 - rho >= quantile:  # the atom at W = 0 already covers q
        return offset
    lo, hi = 0.0, service_s
    while float(md1_wait_cdf(hi, arrival_rate_per_s, service_s)) < quantile:
        lo, hi = hi, hi * 2.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if float(md1_wait_cdf(mid, arrival_rate_per_s, service_s)) < quantile:
            lo = mid
        else:
            hi = mid
    return hi + offset


def deterministic_sojourn_quantile_s(
    quantile: float,
    servers: npt.ArrayLike,
    arrival_rate_per_s: float,
    service_s: float,
    ca2: float = 1.0,
    extra_delay_s: float = 0.0,
) -> FloatArray:
    """q-quantile of wait + D for constant service D, one per count (inf where unstable).

    Exact (M/D/1, `md1_sojourn_quantile_s`) where servers == 1 and arrivals are Poisson
    (c_a² = 1); the M/G/c approximation with c_s² = 0 elsewhere.
    """
    c = np.atleast_1d(np.asarray(servers, dtype=np.int64))
    out = sojourn_quantile_s(
        quantile, c, arrival_rate_per_s, service_s, ca2, 0.0, np.array([service_s + extra_delay_s]), np.array([1.0])
    )
    if ca2 == 1.0 and np.any(c == 1):
        exact = md1_sojourn_quantile_s(quantile, arrival_rate_per_s, service_s, extra_delay_s)
        out = np.where(c == 1, exact, out)
    return out


# --- slowly modulated arrivals: pointwise stationary mixture ---------------------------------------


def gamma_rate_points(cv2: float, points: int = 4) -> tuple[FloatArray, FloatArray]:
    """(multipliers m_k, probabilities p_k): Gauss quadrature of a mean-1 gamma distribution of c² `cv2`.

    Generalized Gauss–Laguerre nodes and weights for shape k = 1/c² by Golub–Welsch (Math. Comp. 23,
    1969): the eigenvalues of the Jacobi matrix with diagonal 2i + k and off-diagonal √(i(i + k − 1)),
    and the squared first eigenvector components. With n points the first 2n − 1 moments are exact,
    so the mean is 1 and the c² is `cv2` (slice means would lose the within-slice spread). `cv2` is
    capped at `MAX_RATE_CV2`; ≤ 1e-9 gives the single point (1, 1).
    """
    if not cv2 > 1e-9:
        return np.array([1.0]), np.array([1.0])
    shape = 1.0 / min(cv2, MAX_RATE_CV2)
    i = np.arange(points, dtype=np.float64)
    jacobi = np.diag(2.0 * i + shape) + np.diag(np.sqrt((i[1:]) * (i[1:] + shape - 1.0)), 1)
    nodes, vectors = np.linalg.eigh(jacobi + np.triu(jacobi, 1).T)
    weights = vectors[0] ** 2
    out_m: FloatArray = nodes / shape
    out_p: FloatArray = weights / weights.sum()
    return out_m, out_p


def relaxation_load(servers: npt.ArrayLike, bin_s: float, mean_service_s: float) -> FloatArray:
    """The highest load whose queue settles within one bin: ρ* = (1 − 1/√(cμ·bin))².

    An M/M/1 queue at load ρ relaxes to its stationary law in about 1/(μ(1 − √ρ)²) (Morse, "Stochastic
    properties of waiting lines", Oper. Res. 3, 1955); with c servers μ becomes cμ. A bin shorter than
    that cannot build the stationary backlog of a near-critical queue, so a bin's stationary part is
    taken at no more than ρ*: this also joins the stationary and the fluid regimes continuously at ρ = 1.
    """
    c = np.maximum(np.asarray(servers, dtype=np.float64), 1.0)
    reach = c * bin_s / mean_service_s
    out: FloatArray = np.clip(1.0 - 1.0 / np.sqrt(np.maximum(reach, 1.0)), 0.0, 0.999) ** 2
    return out


def modulated_sojourn_cdf(
    t_s: npt.ArrayLike,
    servers: npt.ArrayLike,
    arrival_rate_per_s: float,
    rate_multipliers: npt.ArrayLike,
    rate_probabilities: npt.ArrayLike,
    bin_s: float,
    mean_service_s: float,
    ca2: npt.ArrayLike,
    cs2: float,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> FloatArray:
    """P(W + D ≤ t_i) for count i at its own time t_i (one per row) when the arrival rate is modulated.

    Pointwise stationary approximation (Green & Kolesar, "The pointwise stationary approximation for
    queues with nonstationary arrivals", Management Science 37, 1991): over bins of `bin_s` the rate
    is λ·m_k with probability p_k, and requests (weighted by arrivals, p_k·m_k) arriving in a bin of
    rate λ_k wait W_s + W_f: W_s as in the stationary M/G/c (`sojourn_cdf`, with the fast burstiness
    `ca2`) at the bin's load capped at the load that settles within a bin (`relaxation_load`), and
    W_f ~ U[0, (ρ_k − 1)⁺·bin] the fluid backlog of an overloaded bin (growing at λ_k − c/E[S] from
    its start; it ignores backlog carried into later bins, and holds only while the mean load is below
    the servers: `modulated_sojourn_quantile_s` is inf beyond). W_s has an atom 1 − C at 0 and an
    exponential tail of rate θ, so with s = t − d and m = min(a, s):
    P(W_s + W_f ≤ s) = (1 − C)·min(s/a, 1) + C·(m − (e^{−θ(s − m)} − e^{−θs})/θ)/a, and 1 − C·e^{−θs}
    when a = 0. `servers`, `t_s` and `ca2` broadcast to one value per row.
    """
    c = np.atleast_1d(np.asarray(servers, dtype=np.int64))
    queue = _Modulated(c, arrival_rate_per_s, rate_multipliers, rate_probabilities, bin_s, mean_service_s, ca2, cs2,
                       delay_values_s, delay_weights)  # fmt: skip
    return queue.cdf(np.broadcast_to(np.asarray(t_s, dtype=np.float64), c.shape))


class _Modulated:
    """What `modulated_sojourn_cdf` needs that does not depend on t, per rate point (axis 0) and count."""

    def __init__(
        self,
        c: npt.NDArray[np.int64],
        rate: float,
        rate_multipliers: npt.ArrayLike,
        rate_probabilities: npt.ArrayLike,
        bin_s: float,
        mean_s: float,
        ca2: npt.ArrayLike,
        cs2: float,
        delay_values_s: npt.ArrayLike,
        delay_weights: npt.ArrayLike,
    ) -> None:
        m = np.atleast_1d(np.asarray(rate_multipliers, dtype=np.float64))
        p = np.atleast_1d(np.asarray(rate_probabilities, dtype=np.float64))
        self.w = (p * m / float(np.dot(p, m)))[:, None]  # (K, 1): share of arrivals
        self.d = np.asarray(delay_values_s, dtype=np.float64)
        dp = np.asarray(delay_weights, dtype=np.float64)
        self.dp = dp / dp.sum()
        cc = np.broadcast_to(np.maximum(c, 1), (m.size, c.size))
        ca = np.broadcast_to(np.asarray(ca2, dtype=np.float64), cc.shape)
        rho = rate * m[:, None] * mean_s / cc  # (K, n)
        settled = np.minimum(rho, relaxation_load(cc, bin_s, mean_s))
        lam = settled * cc / mean_s
        self.wait_prob = delay_probability(cc, lam * mean_s, ca)
        self.theta = np.maximum(decay_rate_per_s(cc, lam, mean_s, ca, cs2), 1e-12)
        self.spread_s = np.maximum(rho - 1.0, 0.0) * bin_s  # the fluid backlog's reach, a

    def cdf(self, t: FloatArray) -> FloatArray:
        s = t[None, :, None] - self.d[None, None, :]  # (1, n, k)
        pos = np.maximum(s, 0.0)
        c, th, a = self.wait_prob[:, :, None], self.theta[:, :, None], self.spread_s[:, :, None]
        stationary = 1.0 - c * np.exp(-th * pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            reach = np.minimum(a, pos)
            smeared = (reach - (np.exp(-th * (pos - reach)) - np.exp(-th * pos)) / th) / a
            fluid = (1.0 - c) * np.minimum(pos / a, 1.0) + c * smeared
        each = np.where(s >= 0, np.where(a > 0, fluid, stationary), 0.0) @ self.dp  # (K, n)
        out: FloatArray = (self.w * each).sum(axis=0)
        return out


def modulated_sojourn_quantile_s(
    quantile: float,
    servers: npt.ArrayLike,
    arrival_rate_per_s: float,
    rate_multipliers: npt.ArrayLike,
    rate_probabilities: npt.ArrayLike,
    bin_s: float,
    mean_service_s: float,
    ca2: npt.ArrayLike,
    cs2: float,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> FloatArray:
    """q-quantile of `modulated_sojourn_cdf` per count, in seconds (inf where beyond any bounded wait).

    With one rate point it is `sojourn_quantile_s` (closed form); otherwise bisection on t for all
    counts at once: `_MODULATED_STEPS` geometric halvings of the bracket the rate points' own
    quantiles give, then a secant step (within 0.5% of a 60-halving bisection in the tests). inf
    where the mean load reaches the servers.
    """
    if np.atleast_1d(rate_multipliers).size == 1:
        return sojourn_quantile_s(
            quantile, servers, arrival_rate_per_s, mean_service_s, ca2, cs2, delay_values_s, delay_weights
        )
    c = np.atleast_1d(np.asarray(servers, dtype=np.int64))
    queue = _Modulated(c, arrival_rate_per_s, rate_multipliers, rate_probabilities, bin_s, mean_service_s, ca2, cs2,
                       delay_values_s, delay_weights)  # fmt: skip
    # The mixture's quantile lies between its components' (each F_k ≥ q beyond its own quantile):
    # the stationary part's closed form, plus the fluid reach a_k at most.
    stationary = np.stack([
        _quantile_prepared(
            quantile,
            queue.wait_prob[k][:, None],
            queue.theta[k][:, None],
            np.ones(c.shape, dtype=np.bool_),
            np.broadcast_to(queue.d, (c.size, queue.d.size)),
            np.broadcast_to(queue.dp, (c.size, queue.dp.size)),
        )
        for k in range(queue.w.shape[0])
    ])  # fmt: skip
    lo = np.maximum(stationary.min(axis=0), 1e-9)
    hi = np.maximum((stationary + queue.spread_s).max(axis=0), lo)
    f_lo, f_hi = queue.cdf(lo), queue.cdf(hi)
    for _ in range(_MODULATED_STEPS):
        mid = np.sqrt(lo * hi)  # halves the bracket's ratio: a wide bracket (seconds to hours) closes fast
        f_mid = queue.cdf(mid)
        below = f_mid < quantile
        lo, f_lo = np.where(below, mid, lo), np.where(below, f_mid, f_lo)
        hi, f_hi = np.where(below, hi, mid), np.where(below, f_hi, f_mid)
    # One secant step inside the last bracket (the CDF is smooth there unless it jumps at a point of D).
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((quantile - f_lo) / (f_hi - f_lo), 0.0, 1.0)
    hit = np.where(f_hi > f_lo, lo + frac * (hi - lo), hi)
    # Short overloads are fluid, a sustained one is not: at a mean load beyond the servers the queue
    # grows without bound whatever the bins do.
    mean_busy = arrival_rate_per_s * mean_service_s / np.maximum(c, 1)
    out: FloatArray = np.where((c >= 1) & (mean_busy < 1.0), hit, np.inf)
    return out
