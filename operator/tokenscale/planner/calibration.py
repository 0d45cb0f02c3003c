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

What the planner feeds it: the mean inter-token latency over the window, the running sequences
per ready replica as the gauge reads at the decision (one instant, not a window mean), and the mean
context (ISL + OSL/2). Because τ is linear in n and n·L, the step-averaged mean of τ at a fluctuating
batch is τ at the mean batch, so a windowed mean is a sample of the same model. (A token-weighted mean,
like an ITL histogram's, weights steps by their batch: for Poisson batches it equals τ at n̄ + 1;
at the batches a loaded pool runs the difference is within the noise.) The window's mean batch by
Little's law, token rate × mean ITL per replica, was tried in its place: on the planning benchmark
it met the same windows with 2–5% more GPU-hours (Azure ×5, the ×5 step), so the gauge stays.

Prefill is not linear in its input: s(ISL) has an ISL² term, so the window's mean prefill time is
E[s(ISL)] = a + b·E[ISL] + c·E[ISL²], and E[ISL²] = E[ISL]²·(1 + c²_ISL) (Jensen's inequality makes
s(E[ISL]) short). The basis is taken over the window's prompt-length distribution, not at its
mean: on the Mooncake trace (mean 15k tokens, c² 1.4) s(mean) is 13% below the mean prefill time,
and a filter fed the mean would have read a fleet running exactly at its prior as 15% slow.

The state round-trips through a flat list of 13 floats (the operator keeps it in the pool's status
across restarts); a list that is not a state this module could have produced reads back as the
prior, so a corrupted status never poisons the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.planner.lengths import LengthDistribution
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
        """13 floats: the 3 multipliers, the 9 covariance entries (row-major), the sample count."""
        return [*self.multipliers, *self.covariance, float(self.samples)]

    @classmethod
    def from_list(cls, values: list[float]) -> Calibration:
        """The state `to_list` wrote; the prior when `values` is not such a state.

        Checked: 13 finite numbers, multipliers inside the band, a symmetric positive
        semi-definite covariance with positive variances, a non-negative whole sample count.
        """
        if len(values) != 13 or not all(math.isfinite(v) for v in values):
            return cls()
        m = (float(values[0]), float(values[1]), float(values[2]))
        cov = np.asarray(values[3:12], dtype=np.float64).reshape(3, 3)
        samples = values[12]
        if (
            not all(BAND[0] <= x <= BAND[1] for x in m)
            or np.any(np.diag(cov) <= 0)
            or not np.allclose(cov, cov.T, rtol=1e-9, atol=1e-15)
            or float(np.min(np.linalg.eigvalsh(cov))) < -1e-12 * float(np.max(np.diag(cov)))
            or samples < 0
            or samples != int(samples)
        ):
            return cls()
        return cls(m, tuple(float(v) for v in values[3:12]), int(samples))

    def decode(self, prior: DecodeModel) -> DecodeModel:
        """The corrected decode model: each of α, β, γ times its multiplier."""
        m = self.multipliers
        return DecodeModel(prior.alpha_s * m[0], prior.beta_s * m[1], prior.gamma_s_per_token * m[2])

    def prefill(self, prior: PrefillModel) -> PrefillModel:
        """The corrected prefill model: each of a, b, c times its multiplier."""
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
    # Joseph's stabilized form (Simon 2006, §3.3) stays symmetric positive definite in floating
    # point, where P − K·hᵀ·P can lose definiteness after many near-collinear samples.
    keep = np.eye(3) - np.outer(gain, basis)
    p_new = keep @ p @ keep.T + np.outer(gain, gain) * r
    if np.any(bounded < BAND[0]) or np.any(bounded > BAND[1]):
        return Calibration(), "a coefficient left [0.1×, 10×] the prior: reset to the prior"
    cov = tuple(((p_new + p_new.T) / 2).ravel().tolist())
    mult = (float(bounded[0]), float(bounded[1]), float(bounded[2]))
    return Calibration(mult, cov, cal.samples + 1), None


def update_decode(
    cal: Calibration, prior: DecodeModel, batch: float, mean_context_tokens: float, observed_step_s: float
) -> tuple[Calibration, str | None]:
    """Fold in one window's (mean batch, mean context tokens, mean step seconds) of a decode pool.

    Returns the new state and None when the sample was folded in; otherwise the reason, with the
    state unchanged ("... ignored": no load, not finite) or back at the prior ("... reset to the
    prior": the sample or the result diverged).
    """
    if not all(math.isfinite(v) for v in (batch, mean_context_tokens, observed_step_s)):
        return cal, "sample not finite; ignored"
    if batch < 1.0 or mean_context_tokens < 0 or observed_step_s <= 0:
        return cal, "no decode load in the window; sample ignored"
    basis = np.array([prior.alpha_s, prior.beta_s * batch, prior.gamma_s_per_token * batch * mean_context_tokens])
    return _update(cal, basis, observed_step_s)


def update_prefill(
    cal: Calibration, prior: PrefillModel, isl: LengthDistribution, observed_s: float
) -> tuple[Calibration, str | None]:
    """Fold in one window's (prompt-length distribution, mean prefill seconds) of a prefill pool; as
    `update_decode`. The basis is E[(1, ISL, ISL²)] over `isl` (module docstring)."""
    mean_tokens = isl.mean_tokens
    if not (math.isfinite(mean_tokens) and math.isfinite(observed_s)):
        return cal, "sample not finite; ignored"
    if mean_tokens <= 0 or observed_s <= 0:
        return cal, "no prefill load in the window; sample ignored"
    second_moment = float(np.dot(isl.weights, isl.tokens**2))
    basis = np.array([prior.a_s, prior.b_s_per_token * mean_tokens, prior.c_s_per_token2 * second_moment])
    return _update(cal, basis, observed_s)
