"""vLLM-bucket histograms: buckets, `le` semantics, windows and PromQL-style quantiles (sim/histogram.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenscale.sim.histogram import ITL_BUCKETS_S, TTFT_BUCKETS_S, BucketHistogram, token_buckets


@pytest.mark.parametrize(
    ("max_len", "expected"),
    [
        pytest.param(1, (1.0,), id="one"),
        pytest.param(7, (1.0, 2.0, 5.0), id="below-ten"),
        pytest.param(100, (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0), id="hundred-inclusive"),
        pytest.param(
            32768, tuple(float(m * 10**k) for k in range(4) for m in (1, 2, 5)) + (1e4, 2e4), id="32k-context"
        ),
    ],
)
def test_token_buckets_are_1_2_5(max_len: int, expected: tuple[float, ...]) -> None:
    assert token_buckets(max_len) == expected


def test_vllm_latency_buckets() -> None:
    assert TTFT_BUCKETS_S[0] == 0.001 and TTFT_BUCKETS_S[-1] == 2560.0 and len(TTFT_BUCKETS_S) == 22
    assert ITL_BUCKETS_S[0] == 0.01 and ITL_BUCKETS_S[-1] == 80.0 and len(ITL_BUCKETS_S) == 19


@pytest.mark.parametrize(
    ("values", "weights", "cumulative"),
    [
        pytest.param([1.0], [1.0], [1, 1, 1, 1], id="on-a-bound-counts-as-le"),
        pytest.param([0.5, 1.5, 2.5, 9.0], [1.0] * 4, [1, 2, 3, 4], id="one-per-bucket-and-inf"),
        pytest.param([1.5, 3.0], [2.5, 0.5], [0, 2.5, 3.0, 3.0], id="fractional-weights"),
    ],
)
def test_observe_cumulative_counts(values: list[float], weights: list[float], cumulative: list[float]) -> None:
    h = BucketHistogram((1.0, 2.0, 3.0))
    for v, w in zip(values, weights, strict=True):
        h.observe(v, w)
    snap = h.snapshot()
    np.testing.assert_array_equal(snap.bucket_counts, cumulative)
    assert snap.count == cumulative[-1]
    assert snap.sum == pytest.approx(sum(v * w for v, w in zip(values, weights, strict=True)))


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([0.5, 1.5, 1.5, 2.5], 0.5, 1.5, id="mid-bucket-linear"),
        pytest.param([0.5, 0.5, 0.5, 0.5], 0.5, 0.5, id="first-bucket-from-zero"),
        pytest.param([1.5, 1.5, 1.5, 1.5], 1.0, 2.0, id="top-of-bucket"),
        pytest.param([9.0, 9.0], 0.9, 3.0, id="inf-bucket-returns-highest-bound"),
    ],
)
def test_quantile_like_histogram_quantile(values: list[float], q: float, expected: float) -> None:
    h = BucketHistogram((1.0, 2.0, 3.0))
    for v in values:
        h.observe(v)
    assert h.snapshot().quantile(q) == pytest.approx(expected)


def test_window_is_a_difference_and_empty_window_has_no_quantile() -> None:
    h = BucketHistogram((1.0, 2.0))
    h.observe(0.5)
    first = h.snapshot()
    h.observe(1.5)
    h.observe(1.5)
    window = h.snapshot().minus(first)
    assert window.count == 2 and window.sum == pytest.approx(3.0) and window.mean() == pytest.approx(1.5)
    np.testing.assert_array_equal(window.bucket_counts, [0, 2, 2])
    empty = first.minus(first)
    assert math.isnan(empty.quantile(0.9)) and math.isnan(empty.mean())
    with pytest.raises(ValueError, match="different buckets"):
        window.minus(BucketHistogram((1.0,)).snapshot())


@pytest.mark.parametrize(
    "bounds",
    [pytest.param((), id="empty"), pytest.param((1.0, 1.0), id="repeated"), pytest.param((2.0, 1.0), id="decreasing")],
)
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        BucketHistogram(bounds)
