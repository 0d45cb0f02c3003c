"""Cumulative Prometheus-style histograms with vLLM's bucket boundaries, for the simulated fleet.

`sim.fleet` observes per-request latencies and token counts into `BucketHistogram`s and hands out
immutable `HistogramSnapshot`s; the control loop differences two snapshots to get one metrics window
and reads quantiles from it the way PromQL's `histogram_quantile` does, and the engine-metrics
exporter publishes the cumulative bucket counts as they are. Bucket boundaries are vLLM's
(`vllm/v1/metrics/loggers.py`): a simulated fleet must be exactly as coarse as a real one.

Counts are floats: the inter-token-latency histogram is observed once per batch segment with the
number of tokens generated in it as the weight, which the processor-sharing decode model makes
fractional (see `sim.fleet`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# vllm:time_to_first_token_seconds
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
# vllm:inter_token_latency_seconds and vllm:request_time_per_output_token_seconds
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
# Not an engine's: 1% apart from 0.1 ms to 30 s, for a per-token quantile read exactly (the fidelity report).
FINE_LATENCY_BUCKETS_S: tuple[float, ...] = tuple(float(b) for b in np.geomspace(1e-4, 30.0, 1270))
# vllm:e2e_request_latency_seconds, request_queue_time_seconds, request_prefill_time_seconds
REQUEST_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def token_buckets(max_model_len_tokens: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to the model length: 1, 2, 5, 10, 20, 50, … ≤ max_model_len_tokens.

    Used for `vllm:request_prompt_tokens` and `vllm:request_generation_tokens`.
    """
    if max_model_len_tokens < 1:
        raise ValueError(f"max_model_len_tokens must be ≥ 1, got {max_model_len_tokens}")
    out: list[float] = []
    decade = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * decade
            if value > max_model_len_tokens:
                return tuple(out)
            out.append(float(value))
        decade *= 10


@dataclass(frozen=True, eq=False)
class HistogramSnapshot:
    """Cumulative bucket counts at one instant, as Prometheus exposes them.

    `bucket_counts[i]` counts observations ≤ `bounds[i]` (the `le` label); the last entry is the
    `+Inf` bucket and equals `count`. Snapshots are cumulative since the start of the run; `minus`
    turns two of them into one window.
    """

    bounds: tuple[float, ...]
    bucket_counts: FloatArray  # len(bounds) + 1, non-decreasing, last = count
    sum: float
    count: float

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """The observations made between `earlier` and this snapshot (one metrics window)."""
        if earlier.bounds != self.bounds:
            raise ValueError("cannot subtract histograms with different buckets")
        return HistogramSnapshot(
            self.bounds,
            self.bucket_counts - earlier.bucket_counts,
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def mean(self) -> float:
        """sum / count, or NaN when nothing was observed."""
        return self.sum / self.count if self.count > 0 else math.nan

    def quantile(self, q: float) -> float:
        """`histogram_quantile(q, …)` as Prometheus computes it from classic buckets.

        Linear interpolation inside the bucket holding rank q·count, with 0 as the lower edge of
        the first bucket; a rank in the +Inf bucket returns the highest finite bound (Prometheus
        semantics). NaN when the histogram is empty.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        cum = self.bucket_counts
        i = int(np.searchsorted(cum, rank, side="left"))
        if i >= len(self.bounds):
            return self.bounds[-1]
        lower = 0.0 if i == 0 else self.bounds[i - 1]
        below = 0.0 if i == 0 else float(cum[i - 1])
        in_bucket = float(cum[i]) - below
        if in_bucket <= 0:
            return self.bounds[i]
        return lower + (self.bounds[i] - lower) * (rank - below) / in_bucket


class BucketHistogram:
    """A mutable cumulative histogram: `observe` in the simulator's inner loop, `snapshot` to read."""

    __slots__ = ("bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
            raise ValueError("bucket bounds must be non-empty and strictly increasing")
        self.bounds = bounds
        self._counts = [0.0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self._sum = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Count `value` `weight` times (Prometheus `le` semantics: value ≤ bound)."""
        self._counts[bisect_left(self.bounds, value)] += weight
        self._sum += value * weight

    def snapshot(self) -> HistogramSnapshot:
        cum = np.cumsum(np.asarray(self._counts, dtype=np.float64))
        cum.setflags(write=False)
        return HistogramSnapshot(self.bounds, cum, self._sum, float(cum[-1]))
