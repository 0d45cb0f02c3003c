"""Closed-loop correction of the TTFT tail: the arrival burstiness that reproduces the observed quantile.

Called by `planner.plan` every interval for the prefill pool of a disaggregated pool (not an
aggregated one: `plan.fit_tail` says why). Pure numpy.

Why: the operator reads arrivals as counters at its scrape interval (15–30 s). The variation of the
rate from one such bin to the next it sees, and the model takes it as it is (the pointwise
stationary mixture, `queueing.modulated_sojourn_cdf`). What happens inside a bin it cannot see — 67
arrivals in one second on a trace whose mean is 2.6 req/s. It does see the result: the TTFT quantile
at the current replicas. The model's free parameter for that is the arrivals' c_a² within a bin (it
sets the chance of waiting through the Halfin–Whitt term and the decay of the wait through
Allen–Cunneen, `queueing`), and the predicted tail grows with it. So the planner inverts the model
at the count the fleet had: the c_a² at which the predicted fraction of requests above a TTFT bucket
bound equals the observed fraction (the bound whose exceedance is nearest 1 − q), read off a
log-spaced grid in one vectorized evaluation. It then sizes every other count with that c_a². This
is a correction of the tail's scale from observed vs predicted quantiles (as Dynamo corrects means,
and the HPA scales on an observed ratio), with guards:

- only at a steady count (no scale and no replica seen starting within the metrics window) with
  enough samples. Before the second guard, a window that held a scale-up's cold start was fitted
  as if its new replicas had served all of it: on the built-in workload (seed 0), the windows at
  540–630 s, most of whose five minutes one prefill replica served alone, read as c_a² 2.8–3.6,
  and the replicas sized with it cost the run 0.9 of its 9.9 GPU-hours;
- enough requests above the matched bound (`MIN_TAIL_SAMPLES`);
- a pool busy below `MAX_FIT_UTILIZATION`: a saturated pool's waits are its backlog draining
  (they would read as bursts of c_a² → ∞ and send the pool to its maximum);
- the fit is clamped to [`MIN_CV2`, `MAX_CV2`] and smoothed in log space with a half-life, so one
  odd window moves it part of the way; with no fit yet the prior is Poisson within a bin (c_a² = 1);
- the fit moves only when the window contradicts the c_a² in use (`refit`). The observed fraction
  above the bound is a binomial proportion with standard error √(p(1 − p)/n); the c_a² at p ± 2 SE
  bracket what the window can tell. Where the TTFT tail is set by the prompts' own lengths rather
  than by waiting (long prompts at moderate load) that bracket is wide — on the Mooncake trace
  (mean prompt 15k tokens) 0.5 to 6.5, holding Poisson, against 5.0 to 5.9 on the Azure
  conversation trace at ×3 — and the point fit there is noise: read as burstiness, it raised the
  predicted p90 TTFT by 13–25% in the windows after it. A bracket holding the c_a² in use confirms
  it (its age is reset); one that does not moves the fit to the bracket's nearer end, the least
  change the window demands. A short window's point fit is the noisiest: on the built-in workload
  (seed 0) the first 90 s, 419 requests, read 0.5 (the floor) within a bracket of 0.50–0.95. Taken
  at its point, it held one prefill replica until 240 s and the ramp's first burst missed the
  second window (p90 TTFT 891 ms); at the bracket's end, 0.95, which the next windows confirmed
  (brackets 0.75–1.45), the second replica was asked for in time and the window met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MIN_CV2 = 0.5
MAX_CV2 = 64.0
HALF_LIFE_S = 300.0  # a fit's weight halves every 5 minutes
STALE_AFTER_S = 1800.0  # a fit older than this is dropped (the traffic may have changed)
MAX_FIT_UTILIZATION = 0.9  # above it the observed TTFT is a backlog draining: no fit
MIN_TAIL_SAMPLES = 10.0  # requests above the matched bucket bound
PRIOR_CV2 = 1.0  # Poisson within a bin, before any fit
CONTRADICTION_SE = 2.0  # standard errors of the observed fraction that move the fit
_GRID = np.geomspace(MIN_CV2, MAX_CV2, 49)


@dataclass(frozen=True)
class TailFit:
    """The smoothed burstiness (c_a²) fitted to observed TTFT quantiles, and when it was last updated."""

    arrival_cv2: float
    time_s: float

    def to_list(self) -> list[float]:
        return [self.arrival_cv2, self.time_s]

    @classmethod
    def from_list(cls, values: list[float]) -> TailFit | None:
        if len(values) != 2 or not all(math.isfinite(v) for v in values):
            return None
        return cls(min(max(values[0], MIN_CV2), MAX_CV2), values[1])

    def current(self, now_s: float) -> float | None:
        """The fitted c_a², or None when it is too old to trust."""
        return self.arrival_cv2 if now_s - self.time_s <= STALE_AFTER_S else None


def invert(predict: Callable[[FloatArray], FloatArray], observed: float) -> float:
    """The c_a² on the grid at which `predict` (vectorized over c_a², increasing) reaches `observed`.

    Log-linear interpolation between grid points; `MIN_CV2` when even the calmest arrivals predict
    at least the observation, `MAX_CV2` when even the burstiest predict less.
    """
    return _on_curve(predict(_GRID), observed)


def _on_curve(predicted: FloatArray, observed: float) -> float:
    """`invert` on the predictions at the grid's points (one model evaluation serves several inversions)."""
    if predicted[0] >= observed:
        return MIN_CV2
    above = np.flatnonzero(predicted >= observed)
    if above.size == 0:
        return MAX_CV2
    i = int(above[0])
    lo, hi = predicted[i - 1], predicted[i]
    frac = (observed - lo) / (hi - lo) if np.isfinite(hi) and hi > lo else 1.0
    return float(math.exp(math.log(_GRID[i - 1]) + frac * (math.log(_GRID[i]) - math.log(_GRID[i - 1]))))


def tail_bucket(
    bounds_s: tuple[float, ...], fraction_below: tuple[float, ...], samples: float, quantile: float
) -> int | None:
    """The bucket bound whose observed exceedance is nearest the objective's 1 − q, with ≥ 10 samples above it.

    Matching P(TTFT > bound) at a bucket bound compares like with like: interpolating a quantile
    inside a coarse bucket (vLLM's 0.1–0.25 s and 0.25–0.5 s) is off by up to 40% on a replayed trace.
    """
    best, best_gap = None, math.inf
    for i, below in enumerate(fraction_below):
        above = 1.0 - below
        if above * samples < MIN_TAIL_SAMPLES or not 0.0 < above < 0.5:
            continue
        gap = abs(math.log(above / (1.0 - quantile)))
        if gap < best_gap:
            best, best_gap = i, gap
    return best


def update(previous: TailFit | None, fitted_cv2: float, now_s: float) -> TailFit:
    """Blend a new fit into the smoothed one (log space, weight by elapsed time over the half-life)."""
    value = min(max(fitted_cv2, MIN_CV2), MAX_CV2)
    if previous is None or previous.current(now_s) is None:
        return TailFit(value, now_s)
    keep = 0.5 ** (max(now_s - previous.time_s, 0.0) / HALF_LIFE_S)
    blended = math.exp(keep * math.log(previous.arrival_cv2) + (1.0 - keep) * math.log(value))
    return TailFit(blended, now_s)


def refit(
    previous: TailFit | None,
    predict: Callable[[FloatArray], FloatArray],
    observed: float,
    samples: float,
    now_s: float,
) -> TailFit | None:
    """The fit after one window whose fraction above the matched bound is `observed` of `samples` requests.

    The c_a² in use (the current fit, else `PRIOR_CV2`) stands when the c_a² at `observed` ± 2
    standard errors bracket it (module docstring); otherwise the bracket's end nearest it is blended
    in (`update`): the least change the window demands, not its point fit.
    """
    current = previous.current(now_s) if previous is not None else None
    in_use = current if current is not None else PRIOR_CV2
    se = math.sqrt(max(observed * (1.0 - observed), 0.0) / max(samples, 1.0))
    curve = predict(_GRID)
    low = _on_curve(curve, max(observed - CONTRADICTION_SE * se, 0.0))
    high = _on_curve(curve, observed + CONTRADICTION_SE * se)
    if low <= in_use <= high:
        return None if current is None else TailFit(current, now_s)
    return update(previous, low if in_use < low else high, now_s)
