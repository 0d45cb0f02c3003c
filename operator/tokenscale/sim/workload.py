"""Request workloads for the simulator: the `Workload` value, time and rate scaling, a synthetic generator.

A workload is a list of requests, each an arrival time and prompt/output lengths in tokens. Trace
readers (`sim.traces`) and the synthetic generator here build one; `simulate` applies `speedup` and
`rate_scale` (its `--speedup` / `--rate-scale`) and replays it through `sim.fleet`.

The synthetic generator draws a non-homogeneous Poisson process by thinning (Lewis & Shedler, 1979):
candidates at the peak rate λ_max, each kept with probability λ(t)/λ_max. λ(t) is a base rate times a
shape (constant, ramp, diurnal) times a burst multiplier from a two-state Markov-modulated Poisson
process (MMPP; Fischer & Meier-Hellstern, 1993). Lengths are lognormal with a given mean and
coefficient of variation, rounded and clipped: heavy right tails as in production LLM traces.
Everything is vectorized numpy; randomness comes only from the `Generator` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Shape = Literal["diurnal", "ramp", "constant"]


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests in arrival order. Arrays are read-only and of equal length.

    `arrival_s`: float64, sorted, ≥ 0 (readers put the first request at 0); `isl_tokens` and
    `osl_tokens`: int64, ≥ 1. `duration_s` is the span the workload covers (≥ the last arrival): a
    trace's last arrival, a synthetic workload's requested duration.
    """

    name: str
    arrival_s: FloatArray
    isl_tokens: IntArray
    osl_tokens: IntArray
    duration_s: float
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.isl_tokens) != n or len(self.osl_tokens) != n:
            raise ValueError("arrival_s, isl_tokens and osl_tokens must have the same length")
        if self.arrival_s.dtype != np.float64 or self.isl_tokens.dtype != np.int64:
            raise ValueError("arrival_s must be float64 and isl_tokens/osl_tokens int64")
        if self.osl_tokens.dtype != np.int64:
            raise ValueError("osl_tokens must be int64")
        if n:
            if not np.all(np.isfinite(self.arrival_s)) or self.arrival_s[0] < 0.0:
                raise ValueError("arrival times must be finite and non-negative")
            if np.any(np.diff(self.arrival_s) < 0.0):
                raise ValueError("arrival times must be sorted")
            if self.isl_tokens.min() < 1 or self.osl_tokens.min() < 1:
                raise ValueError("token lengths must be ≥ 1")
            if self.duration_s < self.arrival_s[-1]:
                raise ValueError("duration_s must cover the last arrival")
        if not math.isfinite(self.duration_s) or self.duration_s < 0.0:
            raise ValueError("duration_s must be finite and non-negative")
        for array in (self.arrival_s, self.isl_tokens, self.osl_tokens):
            array.setflags(write=False)

    @property
    def n_requests(self) -> int:
        return len(self.arrival_s)

    @property
    def mean_rate_per_s(self) -> float:
        """Requests per second over `duration_s` (NaN for an empty or instantaneous workload)."""
        return self.n_requests / self.duration_s if self.duration_s > 0 else math.nan


def make_workload(
    name: str,
    arrival_s: npt.ArrayLike,
    isl_tokens: npt.ArrayLike,
    osl_tokens: npt.ArrayLike,
    *,
    description: str = "",
    duration_s: float | None = None,
    shift_to_zero: bool = True,
) -> Workload:
    """Build a `Workload` from unsorted arrays: stable sort by time, optionally shift the first to 0.

    `duration_s` defaults to the last (shifted) arrival.
    """
    t = np.asarray(arrival_s, dtype=np.float64)
    isl = np.asarray(isl_tokens, dtype=np.int64)
    osl = np.asarray(osl_tokens, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t, isl, osl = t[order], isl[order], osl[order]
    if shift_to_zero and len(t):
        t = t - t[0]
    last = float(t[-1]) if len(t) else 0.0
    return Workload(name, t, isl, osl, last if duration_s is None else duration_s, description)


def speedup(workload: Workload, factor: float) -> Workload:
    """Compress time by `factor` (> 1 replays faster): arrivals and duration divided by it.

    The request count and lengths are unchanged; the rate is multiplied by `factor`.
    """
    if not (factor > 0.0 and math.isfinite(factor)):
        raise ValueError(f"speedup factor must be positive and finite, got {factor}")
    return Workload(
        workload.name,
        workload.arrival_s / factor,
        workload.isl_tokens.copy(),
        workload.osl_tokens.copy(),
        workload.duration_s / factor,
        f"{workload.description} (time ×1/{factor:g})".strip(),
    )


def rate_scale(workload: Workload, factor: float, rng: np.random.Generator) -> Workload:
    """Scale the request rate by `factor` while keeping the time axis and the rate's shape.

    - factor < 1: independent thinning, each request kept with probability `factor`.
    - factor ≥ 1: every request is kept, plus ⌊factor⌋ − 1 copies and one more with probability
      factor − ⌊factor⌋. A copy keeps its original's lengths and arrives uniformly at random in the
      gap between its original and the next request (the last request's copies: the gap before
      it), so each stretch of the trace carries `factor` times its requests and bursts stay where
      they were. Expected count: factor × n.
    """
    if not (factor > 0.0 and math.isfinite(factor)):
        raise ValueError(f"rate-scale factor must be positive and finite, got {factor}")
    t, isl, osl = workload.arrival_s, workload.isl_tokens, workload.osl_tokens
    n = len(t)
    label = f"{workload.description} (rate ×{factor:g})".strip()
    if factor < 1.0:
        keep = rng.random(n) < factor
        return Workload(workload.name, t[keep], isl[keep], osl[keep], workload.duration_s, label)
    whole = math.floor(factor)
    copies = np.full(n, whole - 1, dtype=np.int64)
    copies += rng.random(n) < (factor - whole)
    src = np.repeat(np.arange(n), copies)
    if n >= 2:
        gap_start = np.concatenate([t[:-1], t[-2:-1]])
        gap_end = np.concatenate([t[1:], t[-1:]])
    else:
        gap_start = gap_end = t
    new_t = gap_start[src] + rng.random(len(src)) * (gap_end[src] - gap_start[src])
    all_t = np.concatenate([t, new_t])
    order = np.argsort(all_t, kind="stable")
    return Workload(
        workload.name,
        all_t[order],
        np.concatenate([isl, isl[src]])[order],
        np.concatenate([osl, osl[src]])[order],
        workload.duration_s,
        label,
    )


@dataclass(frozen=True)
class LengthDistribution:
    """Lognormal token lengths: mean and coefficient of variation of the unclipped distribution.

    σ² = ln(1 + cv²), μ = ln(mean) − σ²/2; samples are rounded and clipped to [min, max] tokens
    (clipping pulls the realized mean slightly below `mean_tokens`). cv = 0 gives a constant.
    """

    mean_tokens: float
    cv: float
    min_tokens: int = 1
    max_tokens: int = 32768

    def __post_init__(self) -> None:
        if self.mean_tokens < 1 or self.cv < 0 or not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"invalid length distribution {self}")

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        if self.cv == 0.0:
            raw = np.full(n, self.mean_tokens)
        else:
            sigma2 = math.log1p(self.cv * self.cv)
            raw = rng.lognormal(math.log(self.mean_tokens) - sigma2 / 2.0, math.sqrt(sigma2), n)
        out: IntArray = np.clip(np.rint(raw), self.min_tokens, self.max_tokens).astype(np.int64)
        return out


@dataclass(frozen=True)
class Bursts:
    """A two-state MMPP: calm (rate ×1) and burst (rate × `rate_multiplier`).

    Sojourn times are exponential with the given means; the process starts calm. The long-run
    share of time in bursts is mean_burst_s / (mean_calm_s + mean_burst_s).
    """

    rate_multiplier: float = 2.0
    mean_calm_s: float = 300.0
    mean_burst_s: float = 60.0

    def __post_init__(self) -> None:
        if self.rate_multiplier < 1.0 or self.mean_calm_s <= 0.0 or self.mean_burst_s <= 0.0:
            raise ValueError(f"invalid burst process {self}")

    def multiplier_at(self, rng: np.random.Generator, t_s: FloatArray, duration_s: float) -> FloatArray:
        """Draw one state path over [0, duration_s) and return the rate multiplier at each time."""
        cycle_s = self.mean_calm_s + self.mean_burst_s
        boundaries: list[FloatArray] = []
        end = 0.0
        while end < duration_s:
            # Enough alternating (calm, burst) sojourns to cover the rest, in one vectorized draw.
            pairs = int((duration_s - end) / cycle_s * 1.5) + 4
            calm = rng.exponential(self.mean_calm_s, pairs)
            burst = rng.exponential(self.mean_burst_s, pairs)
            steps = np.column_stack([calm, burst]).ravel()
            edges = end + np.cumsum(steps)
            boundaries.append(edges)
            end = float(edges[-1])
        edges_all = np.concatenate(boundaries)
        # Segment k (between edges k-1 and k) is calm for even k, burst for odd k.
        segment = np.searchsorted(edges_all, t_s, side="right")
        return np.where(segment % 2 == 1, self.rate_multiplier, 1.0)


def rate_shape(shape: Shape, t_s: FloatArray, duration_s: float, peak_to_base: float, period_s: float) -> FloatArray:
    """The deterministic rate multiplier, between 1 (base) and `peak_to_base` (peak).

    - constant: 1.
    - ramp: a trapezoid: up linearly over the first 40% of the run, at the peak for 20%, back down
      over the last 40% (so an autoscaler has to scale both up and down).
    - diurnal: 1 + (peak − 1)·(1 − cos(2πt/period))/2: base at t = 0, peak at half a period.
    """
    if shape == "constant":
        return np.ones_like(t_s)
    if shape == "ramp":
        x = t_s / duration_s
        up = np.clip(x / 0.4, 0.0, 1.0)
        down = np.clip((1.0 - x) / 0.4, 0.0, 1.0)
        return 1.0 + (peak_to_base - 1.0) * np.minimum(up, down)
    if shape == "diurnal":
        return 1.0 + (peak_to_base - 1.0) * (1.0 - np.cos(2.0 * np.pi * t_s / period_s)) / 2.0
    raise ValueError(f"unknown rate shape {shape!r}")


def synthetic_workload(
    rng: np.random.Generator,
    duration_s: float,
    base_rate_per_s: float,
    *,
    shape: Shape = "diurnal",
    peak_to_base: float = 3.0,
    period_s: float | None = None,
    bursts: Bursts | None = None,
    isl: LengthDistribution | None = None,
    osl: LengthDistribution | None = None,
    name: str = "synthetic",
) -> Workload:
    """Draw a workload: NHPP arrivals by thinning with λ(t) = base · shape(t) · burst(t).

    `base_rate_per_s` is the calm-state rate at the shape's low point; `period_s` (diurnal) defaults
    to the duration. Default lengths: ISL lognormal mean 1000, cv 1.5, clipped to [16, 16384]; OSL
    mean 250, cv 1.0, clipped to [1, 4096].
    """
    if duration_s <= 0 or base_rate_per_s <= 0 or peak_to_base < 1.0:
        raise ValueError("duration_s and base_rate_per_s must be positive and peak_to_base ≥ 1")
    isl = isl or LengthDistribution(1000.0, 1.5, 16, 16384)
    osl = osl or LengthDistribution(250.0, 1.0, 1, 4096)
    period = duration_s if period_s is None else period_s
    peak = base_rate_per_s * peak_to_base * (bursts.rate_multiplier if bursts else 1.0)
    n_candidates = int(rng.poisson(peak * duration_s))
    t = np.sort(rng.uniform(0.0, duration_s, n_candidates))
    rate = base_rate_per_s * rate_shape(shape, t, duration_s, peak_to_base, period)
    if bursts is not None:
        rate = rate * bursts.multiplier_at(rng, t, duration_s)
    t = t[rng.random(n_candidates) * peak < rate]
    n = len(t)
    parts = [f"{shape} ×{peak_to_base:g}", f"base {base_rate_per_s:g}/s"]
    if bursts is not None:
        parts.append(f"bursts ×{bursts.rate_multiplier:g} ({bursts.mean_burst_s:g}s every ~{bursts.mean_calm_s:g}s)")
    parts.append(f"ISL~{isl.mean_tokens:g} OSL~{osl.mean_tokens:g}")
    return Workload(
        name,
        t,
        isl.sample(rng, n),
        osl.sample(rng, n),
        float(duration_s),
        f"synthetic: {', '.join(parts)}, {n} requests over {duration_s:g}s",
    )


def default_synthetic_workload(seed: int = 0) -> Workload:
    """The built-in workload of `tokenscale simulate`: 30 minutes, ramp ×3 with MMPP bursts ×2.

    Base 4 req/s rising to 12 req/s (24 in bursts of ~45 s every ~4 min); ISL mean ~1000 and OSL
    mean ~250 tokens with heavy tails. Seeded, so every machine draws the same requests.
    """
    return synthetic_workload(
        np.random.default_rng(seed),
        1800.0,
        4.0,
        shape="ramp",
        peak_to_base=3.0,
        bursts=Bursts(rate_multiplier=2.0, mean_calm_s=240.0, mean_burst_s=45.0),
        name="synthetic-default",
    )
