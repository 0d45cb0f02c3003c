"""Online correction of a performance model from observed latencies (a Kalman filter on multipliers).

Called by `planner.plan` once per interval with what the fleet showed: the mean inter-token
latency at the mean decode batch, and the mean prefill time at the mean prompt length. The
state is a vector of multipliers m on the prior's coefficients (prior = all ones), so α, β, γ
(or a, b, c) of very different magnitudes share one well-conditioned filter:

    y = Σ_i m_i · prior_i · f_i(x) + ε,      f = (1, n, n·L) for decode, (1, ISL, ISL²) for prefill.

A static-state Kalman filter (equivalently recursive least squares with a Gaussian prior;
Simon, "Optimal State Estimation", 2006, §3.3) with process noise Q lets the multipliers follow a
drifting truth; directions the data never excite stay at the prior instead of wandering, which is
why this beats unregularized RLS on the near-collinear samples a steady fleet produces. Guards:
samples at zero load or not finite are ignored; one update moves a multiplier by at most ±20%;
multipliers stay in [0.1, 10]; a blown-up innovation or a multiplier outside that band returns
to the prior, and the reason is reported.

The state round-trips through a flat list of floats (the operator keeps it in status).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.planner.perf import DecodeModel, PrefillModel

FloatArray = npt.NDArray[np.float64]

PRIOR_STD = 0.5  # a roofline prior is good to about ±50%
NOISE_REL = 0.05  # a windowed mean latency is good to about 5%
PROCESS_VAR = 1e-4  # lets multipliers drift by ~1% per interval
MAX_STEP = 0.2
BAND = (0.1, 10.0)
DIVERGED_INNOVATION = 10.0  # |y − ŷ| / ŷ beyond this means the model no longer describes the fleet


@dataclass(frozen=True)
class Calibration:
    """Multipliers m (length 3), their covariance P (3×3, row-major) and the samples folded in."""

    multipliers: tuple[float, float, float] = (1.0, 1.0, 1.0)
    covariance: tuple[float, ...] = tuple(np.diag([PRIOR_STD**2] * 3).ravel().tolist())
    samples: int = 0

    def to_list(self) -> list[float]:
        return [*self.multipliers, *self.covariance, float(self.samples)]

    @classmethod
    def from_list(cls, values: list[float]) -> Calibration:
        if len(values) != 13 or not all(math.isfinite(v) for v in values):
            return cls()
        m = (values[0], values[1], values[2])
        return cls(m, tuple(values[3:12]), int(values[12]))

    def decode(self, prior: DecodeModel) -> DecodeModel:
        m = self.multipliers
        return DecodeModel(prior.alpha_s * m[0], prior.beta_s * m[1], prior.gamma_s_per_token * m[2])

    def prefill(self, prior: PrefillModel) -> PrefillModel:
        m = self.multipliers
        return PrefillModel(prior.a_s * m[0], prior.b_s_per_token * m[1], prior.c_s_per_token2 * m[2])


def _update(cal: Calibration, basis: FloatArray, observed_s: float) -> tuple[Calibration, str | None]:
    m = np.asarray(cal.multipliers, dtype=np.float64)
    p = np.asarray(cal.covariance, dtype=np.float64).reshape(3, 3) + np.eye(3) * PROCESS_VAR
    predicted = float(basis @ m)
    if predicted <= 0:
        return cal, "prediction is not positive; sample ignored"
    innovation = observed_s - predicted
    if abs(innovation) / predicted > DIVERGED_INNOVATION:
        return Calibration(), f"observed {observed_s:.4g}s vs predicted {predicted:.4g}s: reset to the prior"
    r = (NOISE_REL * observed_s) ** 2
    gain = p @ basis / (basis @ p @ basis + r)
    proposed = m + gain * innovation
    bounded = np.clip(proposed, m * (1 - MAX_STEP), m * (1 + MAX_STEP))
    p_new = p - np.outer(gain, basis @ p)
    if np.any(bounded < BAND[0]) or np.any(bounded > BAND[1]):
        return Calibration(), "a coefficient left [0.1×, 10×] the prior: reset to the prior"
    cov = tuple(((p_new + p_new.T) / 2).ravel().tolist())
    mult = (float(bounded[0]), float(bounded[1]), float(bounded[2]))
    return Calibration(mult, cov, cal.samples + 1), None


def update_decode(
    cal: Calibration, prior: DecodeModel, batch: float, mean_context_tokens: float, observed_step_s: float
) -> tuple[Calibration, str | None]:
    """Fold in one (mean batch, mean context, mean step time) sample; returns (state, reason or None)."""
    if not all(math.isfinite(v) for v in (batch, mean_context_tokens, observed_step_s)):
        return cal, "sample not finite; ignored"
    if batch < 1.0 or observed_step_s <= 0:
        return cal, "no decode load in the window; sample ignored"
    basis = np.array([prior.alpha_s, prior.beta_s * batch, prior.gamma_s_per_token * batch * mean_context_tokens])
    return _update(cal, basis, observed_step_s)


def update_prefill(
    cal: Calibration, prior: PrefillModel, isl_tokens: float, observed_s: float
) -> tuple[Calibration, str | None]:
    """Fold in one (mean prompt length, mean prefill time) sample."""
    if not all(math.isfinite(v) for v in (isl_tokens, observed_s)):
        return cal, "sample not finite; ignored"
    if isl_tokens <= 0 or observed_s <= 0:
        return cal, "no prefill load in the window; sample ignored"
    basis = np.array([prior.a_s, prior.b_s_per_token * isl_tokens, prior.c_s_per_token2 * isl_tokens**2])
    return _update(cal, basis, observed_s)
