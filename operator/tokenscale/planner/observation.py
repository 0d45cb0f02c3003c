"""What the planner sees of the world in one interval: load, lengths, latencies and replicas.

Built by `metrics` (from Prometheus), by `sim` (from the simulated fleet) and by the `plan` CLI
(from a recorded YAML). A signal that could not be read is `None` and has a note saying why;
it is never 0, because a scrape gap that reads as "no load" would shrink a fleet to its minimum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from tokenscale.api import Role
from tokenscale.planner.lengths import LengthDistribution


@dataclass(frozen=True)
class ReplicaCounts:
    """Replicas of one pool as the /scale subresource reports them."""

    current: int  # spec.replicas: ready + pending, all of it committed capacity
    ready: int


NoteKind = Literal[
    # the signal could not be read: the planner holds it as unknown (and never scales down on the rest)
    "missing",
    "stale",
    "nan",
    "counter-reset",
    "implausible",
    "unreachable",
    "timeout",
    "http-status",
    "bad-response",
    "query-error",
    # the signal was read, with a caveat on its precision
    "coarse-buckets",
    "too-few-samples",
    "approximate",
]
CAVEAT_KINDS: frozenset[NoteKind] = frozenset({"coarse-buckets", "too-few-samples", "approximate"})
_CAVEATS = CAVEAT_KINDS


@dataclass(frozen=True)
class DataNote:
    """A data-quality remark on one signal: why it could not be read, or a caveat on its precision."""

    signal: str
    kind: NoteKind
    message: str

    @property
    def unavailable(self) -> bool:
        """The signal could not be read (every kind but the precision caveats): no scale-down on the rest."""
        return self.kind not in _CAVEATS


@dataclass(frozen=True)
class LatencyHistogram:
    """A latency histogram over the window: finite bucket bounds (s) and the fraction of samples ≤ each."""

    bounds_s: tuple[float, ...]
    fraction_below: tuple[float, ...]
    samples: float

    @classmethod
    def from_cumulative(
        cls, bounds_s: Sequence[float], cumulative_counts: Sequence[float] | npt.NDArray[np.float64], count: float
    ) -> LatencyHistogram | None:
        """From Prometheus-style cumulative bucket counts (the +Inf bucket may follow); None if empty or invalid."""
        cum = [float(c) for c in list(cumulative_counts)[: len(bounds_s)]]
        if not bounds_s or not (count > 0 and math.isfinite(count)) or len(cum) != len(bounds_s):
            return None
        if any(not math.isfinite(c) or c < 0 for c in cum) or any(b < a for a, b in zip(cum, cum[1:], strict=False)):
            return None
        return cls(tuple(float(b) for b in bounds_s), tuple(min(c / count, 1.0) for c in cum), float(count))


@dataclass(frozen=True)
class Observation:
    """One snapshot of the serving fleet over the metrics window. Units are in the names.

    `request_rate_per_s` is the offered load (arrivals), never completions alone.
    `*_cv2` are squared coefficients of variation (variance / mean²); `arrival_cv2` is the
    burstiness of inter-arrival times (1 for Poisson).
    """

    time_s: float
    request_rate_per_s: float | None
    isl_mean_tokens: float | None
    osl_mean_tokens: float | None
    replicas: Mapping[Role, ReplicaCounts]
    isl_cv2: float | None = None
    isl_distribution: LengthDistribution | None = None  # prompt-length shape from the histogram's buckets
    osl_cv2: float | None = None
    arrival_cv2: float | None = None  # index of dispersion of arrival counts in bins of dispersion_bin_s
    dispersion_bin_s: float | None = None
    ttft_quantile_s: float | None = None
    ttft_histogram: LatencyHistogram | None = None  # the TTFT buckets over the window (for `planner.tail`)
    tpot_quantile_s: float | None = None  # per-request TPOT at the objective's quantile
    itl_quantile_s: float | None = None  # per-token inter-token latency at the same quantile
    itl_mean_s: float | None = None  # mean inter-token latency: the mean decode step a token waits
    prefill_time_mean_s: float | None = None
    # Requests queued per pool (a frontend's single queue counts for the pool that takes the prompts).
    waiting_requests: Mapping[Role, float] = field(default_factory=dict)
    running_requests: Mapping[Role, float] = field(default_factory=dict)
    kv_usage_fraction: float | None = None
    notes: tuple[DataNote, ...] = ()

    def load_signals(self) -> dict[str, float | None]:
        """The signals without which no count can be planned, by name."""
        return {
            "request_rate": self.request_rate_per_s,
            "isl_mean": self.isl_mean_tokens,
            "osl_mean": self.osl_mean_tokens,
        }

    def load_signals_missing(self) -> list[str]:
        """Names of the load signals that are absent, or not a value they can take (`implausible`)."""
        return [name for name, value in self.load_signals().items() if readable(name, value) is None]


# Upper bounds on what a load signal can be: far above any deployment (a million requests a second
# into one pool; ten million tokens a request), far below where the queueing model overflows to inf.
# A value beyond is a broken exporter or a typo, and is read as implausible, never planned on.
# (A queue of ten million requests in one pool is as far beyond any deployment.)
PLAUSIBLE_MAX: Mapping[str, float] = {"request_rate": 1e6, "isl_mean": 1e7, "osl_mean": 1e7, "waiting": 1e7}


def implausible(signal: str, value: float) -> str | None:
    """Why `value` cannot be `signal` (not finite, negative, above `PLAUSIBLE_MAX`), or None when it can be."""
    if math.isnan(value):
        return None  # NaN is 0/0 (idle), which callers note as "nan"
    if math.isinf(value) or value < 0:
        return f"{value:g} is not a finite non-negative number"
    bound = PLAUSIBLE_MAX.get(signal)
    if bound is not None and value > bound:
        return f"{value:g} is above {bound:g}, more than any pool serves"
    return None


def dispersion_bin_s(window_s: float) -> float:
    """Bin of the arrival-count dispersion over a metrics window: an eighth of it, at least 1 s.

    At a 2-minute window that is 15 s, the usual scrape interval: the finest resolution at which a
    Prometheus counter tells how arrivals were spread (the operator and the simulator both use it).
    """
    return max(window_s / 8.0, 1.0)


def readable(signal: str, value: float | None) -> float | None:
    """`value` when `signal` can take it (finite, non-negative, within `PLAUSIBLE_MAX`), else None."""
    if value is None or math.isnan(value) or implausible(signal, value) is not None:
        return None
    return value


def moments_from_buckets(
    bounds: Sequence[float], cumulative_counts: Sequence[float] | npt.NDArray[np.float64], total: float, count: float
) -> tuple[float | None, float | None]:
    """Mean (exact, sum/count) and squared coefficient of variation (estimated) of a histogram window.

    The variance is estimated by placing each bucket's observations at the geometric middle of its
    bounds (the buckets of token-count histograms are log-spaced: 1-2-5 series) and the +Inf bucket
    at 1.5× the last bound; the mean used is the exact one. Returns (None, None) when the window
    has no observations: 0/0 is missing data, not zero.
    """
    if count <= 0 or not math.isfinite(total):
        return None, None
    mean = total / count
    if len(bounds) == 0:  # only the +Inf bucket: the mean is known, the spread is not
        return mean, None
    cum = np.asarray(cumulative_counts, dtype=np.float64)
    per_bucket = np.diff(np.concatenate(([0.0], cum)))
    edges = np.asarray(bounds, dtype=np.float64)
    lower = np.concatenate(([edges[0] / 2.0], edges[:-1]))
    mids = np.sqrt(np.maximum(lower, 1e-12) * edges)
    mids = np.concatenate((mids, [edges[-1] * 1.5]))
    second = float(np.dot(per_bucket, mids**2)) / count
    var = max(second - mean**2, 0.0)
    return mean, (var / mean**2 if mean > 0 else None)
