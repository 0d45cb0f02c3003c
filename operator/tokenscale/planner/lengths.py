"""Request-length distributions the sizing integrates over: from a histogram's buckets, or a lognormal.

Called by `metrics.observe` and `sim.loop` (a window's prompt-length histogram becomes a
`LengthDistribution` on the `Observation`) and by `planner.sizing` (prefill service times are s(ISL)
at these points). Pure numpy.

Why not two moments: production prompt lengths are not lognormal. In the Azure 2023 conversation
trace (Patel et al., "Splitwise", ISCA 2024) a window with mean 1,400 tokens and c² ≈ 1 has a p90 of
4,080 tokens (a cluster near 4k), where a lognormal with the same moments puts its p90 near 2,900;
the p90 prefill time is then 30% short. The histogram's buckets carry that shape.

From buckets (`from_buckets`): inside each bucket the counts fix the mass, and the exact mean
(`_sum / _count`) is one more constraint. The maximum-entropy density with given bucket masses and
a given mean is f(x) ∝ m_b·e^{κx} on bucket b (Jaynes, "Information theory and statistical
mechanics", Phys. Rev. 1957: the exponential family of the constraint functions), with one κ for all
buckets, solved by bisection so that the mean matches. Each bucket is then represented by the
conditional means of equal-mass slices (the same device as `lognormal`). Mass above the last finite
bound (vLLM's +Inf bucket, only prompts beyond max-model-len) is placed at 1.5× that bound.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_GRID = 48  # points per bucket on which the tilted density is integrated
_SLICES = 6  # equal-mass slices kept per bucket
_KAPPA_BISECTIONS = 60


@dataclass(frozen=True, eq=False)
class LengthDistribution:
    """A discrete distribution of request lengths: `tokens` (ascending) with probabilities `weights`."""

    tokens: FloatArray
    weights: FloatArray

    @property
    def mean_tokens(self) -> float:
        return float(np.dot(self.tokens, self.weights))

    @property
    def cv2(self) -> float:
        mean = self.mean_tokens
        return float(np.dot(self.weights, (self.tokens - mean) ** 2)) / mean**2 if mean > 0 else 0.0

    def quantile_tokens(self, q: float) -> float:
        """Smallest point whose cumulative probability reaches q."""
        cum = np.cumsum(self.weights)
        return float(self.tokens[min(int(np.searchsorted(cum, q - 1e-12)), self.tokens.size - 1)])

    def with_mean(self, mean_tokens: float) -> LengthDistribution:
        """The same shape scaled to another mean (a forecast changes the mean, not the shape)."""
        own = self.mean_tokens
        factor = mean_tokens / own if own > 0 else 1.0
        return LengthDistribution(self.tokens * factor, self.weights)


def at_mean(shape: LengthDistribution | None, mean_tokens: float, cv2: float) -> LengthDistribution:
    """The observed shape moved to `mean_tokens` (a forecast changes the mean, not the shape), else a
    lognormal with that mean and c² (no histogram)."""
    return shape.with_mean(mean_tokens) if shape is not None else lognormal(mean_tokens, cv2)


def lognormal(mean_tokens: float, cv2: float) -> LengthDistribution:
    """Slices of a lognormal with the given mean and c²: the conditional mean of each slice.

    With X = exp(μ + σZ), σ² = ln(1 + c²), the slice between levels p_i < p_{i+1}
    (z_i = Φ⁻¹(p_i)) has conditional mean mean·(Φ(z_{i+1} − σ) − Φ(z_i − σ))/(p_{i+1} − p_i). The mean
    is exact; levels 1% apart to p90, 0.1% to p99 and 0.02% to p99.9 keep p50…p99.9 right to a
    fraction of a percent.
    """
    if cv2 <= 1e-9:
        return LengthDistribution(np.array([mean_tokens]), np.array([1.0]))
    levels, _ = _slice_levels()
    widths = np.diff(levels)
    values = mean_tokens * _shifted_masses(float(np.sqrt(np.log1p(cv2)))) / widths
    return LengthDistribution(values, widths)


@functools.cache
def _slice_levels() -> tuple[FloatArray, FloatArray]:
    levels = np.unique(
        np.concatenate(
            (np.linspace(0.0, 0.9, 91), np.linspace(0.9, 0.99, 91), np.linspace(0.99, 0.999, 46), [0.9995, 1.0])
        )
    )
    inner = [NormalDist().inv_cdf(float(p)) for p in levels[1:-1]]
    edges = np.array([-np.inf, *inner, np.inf])
    levels.setflags(write=False)
    edges.setflags(write=False)
    return levels, edges


@functools.lru_cache(maxsize=256)
def _shifted_masses(sigma: float) -> FloatArray:
    """Φ(z_{i+1} − σ) − Φ(z_i − σ) for each slice (cached: a fleet reports few distinct c² values)."""
    _, edges = _slice_levels()
    cdf = np.array([0.5 * math.erfc(-(v - sigma) / math.sqrt(2.0)) for v in edges.tolist()])
    masses = np.diff(cdf)
    masses.setflags(write=False)
    return masses


def from_buckets(
    bounds: Sequence[float], cumulative_counts: Sequence[float] | FloatArray, total: float, count: float
) -> LengthDistribution | None:
    """The maximum-entropy length distribution with the window's bucket masses and exact mean.

    `bounds` are the finite upper bounds (ascending), `cumulative_counts` the cumulative count at
    each bound plus, optionally, the +Inf bucket last; `total` / `count` the histogram's `_sum` and
    `_count` over the window. None when the window holds no observation (0/0 is missing data) or
    the counts are not a histogram (negative, decreasing or not finite).
    """
    edges = np.asarray(bounds, dtype=np.float64)
    cum = np.asarray(cumulative_counts, dtype=np.float64)
    if not (count > 0 and math.isfinite(count) and math.isfinite(total) and total > 0):
        return None
    if edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        return None
    if cum.size == edges.size:
        cum = np.concatenate((cum, [count]))
    if cum.size != edges.size + 1 or not np.all(np.isfinite(cum)):
        return None
    mass = np.diff(np.concatenate(([0.0], cum)))
    if np.any(mass < -1e-9 * max(count, 1.0)) or mass.sum() <= 0:
        return None
    mass = np.maximum(mass, 0.0) / mass.sum()
    lower = np.concatenate(([0.0], edges))
    upper = np.concatenate((edges, [edges[-1] * 1.5]))
    # The +Inf bucket is a point at 1.5× the last bound; every finite bucket gets a grid.
    keep = mass > 0
    lo, hi, m = lower[keep], upper[keep], mass[keep]
    is_point = keep[-1] and hi[-1] == edges[-1] * 1.5
    frac = (np.arange(_GRID) + 0.5) / _GRID
    grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    if is_point:
        grid[-1, :] = edges[-1] * 1.5
    target = total / count
    kappa = _solve_tilt(grid, m, lo, hi, target)
    cell = _tilted(grid, m, lo, hi, kappa)
    return _compress(grid, cell)


def _tilted(grid: FloatArray, mass: FloatArray, lo: FloatArray, hi: FloatArray, kappa: float) -> FloatArray:
    """Cell probabilities ∝ e^{κx} inside each bucket, each bucket summing to its mass."""
    anchor = hi if kappa > 0 else lo  # exponents ≤ 0: nothing overflows
    weight = np.exp(kappa * (grid - anchor[:, None]))
    weight /= weight.sum(axis=1, keepdims=True)
    out: FloatArray = weight * mass[:, None]
    return out


def _solve_tilt(grid: FloatArray, mass: FloatArray, lo: FloatArray, hi: FloatArray, target: float) -> float:
    """κ whose tilted buckets have the target mean (monotone in κ), clamped to what the buckets allow."""
    scale = float(np.max(hi - lo))
    lo_k, hi_k = -200.0 / scale, 200.0 / scale

    def mean(k: float) -> float:
        return float(np.sum(_tilted(grid, mass, lo, hi, k) * grid))

    if mean(lo_k) >= target:
        return lo_k
    if mean(hi_k) <= target:
        return hi_k
    for _ in range(_KAPPA_BISECTIONS):
        mid = 0.5 * (lo_k + hi_k)
        if mean(mid) < target:
            lo_k = mid
        else:
            hi_k = mid
    return 0.5 * (lo_k + hi_k)


def _compress(grid: FloatArray, cell: FloatArray) -> LengthDistribution:
    """Each bucket's grid to `_SLICES` equal-mass slices, each at its conditional mean."""
    tokens: list[float] = []
    weights: list[float] = []
    for xs, ps in zip(grid, cell, strict=True):
        total = float(ps.sum())
        if total <= 0:
            continue
        cum = np.cumsum(ps) / total
        slice_of = np.minimum((cum - 0.5 * ps / total) * _SLICES, _SLICES - 1).astype(np.int64)
        for s in np.unique(slice_of):
            sel = slice_of == s
            w = float(ps[sel].sum())
            if w > 0:
                tokens.append(float(np.dot(xs[sel], ps[sel])) / w)
                weights.append(w)
    order = np.argsort(tokens, kind="stable")
    t = np.asarray(tokens)[order]
    p = np.asarray(weights)[order]
    return LengthDistribution(t, p / p.sum())
