"""Queueing formulas the sizing uses: Erlang C, M/G/c waiting-time tails, M/D/1, sojourn quantiles.

Called by `planner.sizing` (vectorized over candidate server counts) and by the tests that check
the formulas against published values and a brute-force simulation. Pure numpy and the standard
library. Times in seconds, rates per second; `offered_load` is λ/μ in Erlangs.

References
- Erlang C through the Erlang B recursion B(0)=1, B(k) = a·B(k−1)/(k + a·B(k−1)),
  C = B/(1 − ρ(1 − B)) (e.g. Kleinrock, "Queueing Systems", vol. 1, 1975, §3.6; the recursion is
  stable for thousands of servers where the factorial form overflows).
- M/M/c waiting time: P(W > t) = C·exp(−(cμ − λ)t) (Kleinrock §3.6). For general arrivals and
  service the Allen–Cunneen / Kingman heavy-traffic scaling multiplies the decay time by
  (c_a² + c_s²)/2 (Allen, "Probability, Statistics and Queueing Theory", 2nd ed., 1990, §6.5;
  Kingman 1961), which is exact for M/M/c and gives the Pollaczek–Khinchine mean for M/G/1.
- M/D/1 waiting-time distribution (Erlang 1909; Crommelin 1932):
  P(W ≤ t) = (1 − ρ) Σ_{k=0}^{⌊t/D⌋} [λ(kD − t)]^k / k! · e^{−λ(kD − t)}.
  Its mean is ρD / (2(1 − ρ)), so DistServe's prefill-queue mean TTFT is D + λD²/(2(1 − λD))
  (Zhong et al., OSDI 2024, §4.1).
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_BISECTIONS = 64


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c with `servers` servers and load a = λ/μ Erlangs.

    1.0 when a ≥ servers (the queue is unstable and every arrival eventually waits).
    """
    if servers < 1:
        raise ValueError(f"servers must be ≥ 1, got {servers}")
    if offered_load < 0:
        raise ValueError(f"offered_load must be ≥ 0, got {offered_load}")
    return float(erlang_c_vec(np.array([servers]), offered_load)[0])


def erlang_c_vec(servers: npt.ArrayLike, offered_load: npt.ArrayLike) -> FloatArray:
    """Erlang C for arrays of server counts and loads (broadcast together), by the B recursion."""
    c = np.asarray(servers, dtype=np.int64)
    a = np.asarray(offered_load, dtype=np.float64)
    c, a = np.broadcast_arrays(c, a)
    out = np.ones(c.shape, dtype=np.float64)
    if c.size == 0:
        return out
    b = np.ones(c.shape, dtype=np.float64)
    b_at_c = np.ones(c.shape, dtype=np.float64)
    for k in range(1, int(c.max()) + 1):
        b = a * b / (k + a * b)
        b_at_c = np.where(c == k, b, b_at_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = a / c
        value = b_at_c / (1.0 - rho * (1.0 - b_at_c))
    stable = rho < 1.0
    out = np.where(stable, np.clip(value, 0.0, 1.0), 1.0)
    out = np.where(a == 0.0, 0.0, out)
    return out


def decay_rate_per_s(
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: float,
    cs2: npt.ArrayLike,
) -> FloatArray:
    """θ = (cμ − λ)·2/(c_a² + c_s²): the exponential decay rate of the M/G/c waiting-time tail (≤0 if unstable)."""
    c = np.asarray(servers, dtype=np.float64)
    mu = 1.0 / np.asarray(mean_service_s, dtype=np.float64)
    scv = np.maximum(ca2 + np.asarray(cs2, dtype=np.float64), 1e-9)
    out: FloatArray = (c * mu - np.asarray(arrival_rate_per_s, dtype=np.float64)) * 2.0 / scv
    return out


def mgc_wait_tail(
    t_s: npt.ArrayLike,
    servers: npt.ArrayLike,
    arrival_rate_per_s: float,
    mean_service_s: npt.ArrayLike,
    ca2: float = 1.0,
    cs2: npt.ArrayLike = 1.0,
) -> FloatArray:
    """P(W > t) ≈ C(c, λ/μ)·exp(−θ·t) for M/G/c with burstiness c_a², c_s² (1.0 where unstable)."""
    c = np.asarray(servers, dtype=np.int64)
    s = np.asarray(mean_service_s, dtype=np.float64)
    wait_prob = erlang_c_vec(c, arrival_rate_per_s * s)
    theta = decay_rate_per_s(c, arrival_rate_per_s, s, ca2, cs2)
    t = np.asarray(t_s, dtype=np.float64)
    out: FloatArray = np.where(theta > 0, wait_prob * np.exp(-np.maximum(theta, 0.0) * t), 1.0)
    return out


def mgc_mean_wait_s(
    servers: npt.ArrayLike,
    arrival_rate_per_s: float,
    mean_service_s: npt.ArrayLike,
    ca2: float = 1.0,
    cs2: npt.ArrayLike = 1.0,
) -> FloatArray:
    """Allen–Cunneen mean wait: C(c, a)/(cμ − λ) · (c_a² + c_s²)/2 (inf where unstable)."""
    c = np.asarray(servers, dtype=np.int64)
    s = np.asarray(mean_service_s, dtype=np.float64)
    theta = decay_rate_per_s(c, arrival_rate_per_s, s, ca2, cs2)
    wait_prob = erlang_c_vec(c, arrival_rate_per_s * s)
    with np.errstate(divide="ignore"):
        out: FloatArray = np.where(theta > 0, wait_prob / np.where(theta > 0, theta, 1.0), np.inf)
    return out


def md1_mean_wait_s(arrival_rate_per_s: float, service_s: float) -> float:
    """Pollaczek–Khinchine mean wait of M/D/1: ρD/(2(1 − ρ)), inf when ρ ≥ 1."""
    rho = arrival_rate_per_s * service_s
    return math.inf if rho >= 1.0 else rho * service_s / (2.0 * (1.0 - rho))


def md1_wait_cdf(t_s: float, arrival_rate_per_s: float, service_s: float) -> float:
    """Exact P(W ≤ t) of M/D/1 by Erlang's formula, summed in decimal arithmetic.

    The terms alternate in sign and grow like e^{λt}, so binary floats lose every digit once λt
    passes ~30; the sum is taken with enough decimal digits to keep 15 significant ones.
    """
    lam, d = arrival_rate_per_s, service_s
    rho = lam * d
    if rho >= 1.0:
        return 0.0
    if t_s < 0:
        return 0.0
    kmax = int(math.floor(t_s / d))
    digits = 30 + int(lam * t_s / math.log(10)) + int(math.log10(kmax + 2) * (kmax + 1))
    with decimal.localcontext() as ctx:
        ctx.prec = max(digits, 40)
        lam_d, t_d, d_d = decimal.Decimal(lam), decimal.Decimal(t_s), decimal.Decimal(d)
        total = decimal.Decimal(0)
        factorial = decimal.Decimal(1)
        for k in range(kmax + 1):
            if k > 0:
                factorial *= k
            x = lam_d * (k * d_d - t_d)  # ≤ 0
            power = decimal.Decimal(1) if k == 0 else x**k
            total += power / factorial * (-x).exp()
        value = (1 - decimal.Decimal(rho)) * total
    return min(max(float(value), 0.0), 1.0)


def sojourn_quantile_s(
    quantile: float,
    servers: npt.ArrayLike,
    arrival_rate_per_s: npt.ArrayLike,
    mean_service_s: npt.ArrayLike,
    ca2: float,
    cs2: npt.ArrayLike,
    delay_values_s: npt.ArrayLike,
    delay_weights: npt.ArrayLike,
) -> FloatArray:
    """q-quantile of W + D, vectorized over candidate server counts (inf where unstable).

    W is the M/G/c wait: an atom of mass 1 − C at zero and an exponential tail of mass C and rate
    θ (`mgc_wait_tail`). D is the time after the wait — service plus any fixed delays — given as
    a discrete distribution (`delay_values_s`, `delay_weights`); with W independent of D,

        P(W + D ≤ t) = Σ_i p_i · 1{t ≥ d_i} · (1 − C·e^{−θ(t − d_i)}),

    which is inverted by bisection. `delay_values_s` may be 1-D (same for every count) or 2-D
    (one row per count); `arrival_rate_per_s` a scalar or one rate per count. `mean_service_s`
    and `cs2` describe the service that occupies a server.
    """
    c = np.asarray(servers, dtype=np.int64)
    s = np.broadcast_to(np.asarray(mean_service_s, dtype=np.float64), c.shape)
    wait_prob = erlang_c_vec(c, np.asarray(arrival_rate_per_s, dtype=np.float64) * s)
    theta = decay_rate_per_s(c, arrival_rate_per_s, s, ca2, cs2)
    stable = theta > 0
    d = np.asarray(delay_values_s, dtype=np.float64)
    d = np.broadcast_to(d if d.ndim == 2 else d[None, :], (c.size, d.shape[-1]))
    p = np.asarray(delay_weights, dtype=np.float64)
    p = p / p.sum()
    th = np.where(stable, theta, 1.0)[:, None]
    cw = wait_prob[:, None]

    def cdf(t: FloatArray) -> FloatArray:
        gap = t[:, None] - d
        inside = np.where(gap >= 0, 1.0 - cw * np.exp(-th * np.maximum(gap, 0.0)), 0.0)
        out: FloatArray = inside @ p if p.ndim == 1 else (inside * p).sum(axis=1)
        return out

    lo = d.min(axis=1)
    tail = np.log(np.maximum(wait_prob, 1e-300) / max(1.0 - quantile, 1e-12))
    hi = d.max(axis=1) + np.maximum(tail, 0.0) / th[:, 0] + 1e-12
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < quantile
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.where(stable, hi, np.inf)
