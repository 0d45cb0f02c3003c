"""Length distributions from histogram buckets (maximum entropy with the exact mean) and lognormal slices."""

from __future__ import annotations

import numpy as np
import pytest

from tokenscale.planner import lengths

VLLM_TOKEN_BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0)


def _bucketed(samples: np.ndarray) -> tuple[list[float], float, float]:
    cum = [float((samples <= b).sum()) for b in VLLM_TOKEN_BOUNDS] + [float(samples.size)]
    return cum, float(samples.sum()), float(samples.size)


@pytest.mark.parametrize(
    ("mean", "cv2"),
    [
        pytest.param(1500.0, 0.6, id="azure-like"),
        pytest.param(15000.0, 1.4, id="long-prompts"),
        pytest.param(80.0, 3.0, id="short-heavy"),
    ],
)
def test_from_buckets_keeps_the_exact_mean_and_each_buckets_mass(mean: float, cv2: float) -> None:
    rng = np.random.default_rng(1)
    sigma = np.sqrt(np.log1p(cv2))
    samples = np.clip(np.round(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, 20_000)), 1, 30_000)
    cum, total, count = _bucketed(samples)
    d = lengths.from_buckets(VLLM_TOKEN_BOUNDS, cum, total, count)
    assert d is not None
    assert d.mean_tokens == pytest.approx(total / count, rel=1e-6)
    for bound, below in zip(VLLM_TOKEN_BOUNDS, cum, strict=False):
        assert float(d.weights[d.tokens <= bound].sum()) == pytest.approx(below / count, abs=1e-9)


def test_from_buckets_finds_a_cluster_a_two_moment_fit_misses() -> None:
    # The Azure 2023 conversation shape: most prompts near 1k, a cluster at ~4k tokens. Its p90 is in
    # the cluster; a lognormal with the same mean and c² puts it ~30% lower.
    rng = np.random.default_rng(2)
    samples = np.concatenate((rng.lognormal(np.log(800), 0.6, 16_000), rng.normal(4050, 40, 4_000)))
    cum, total, count = _bucketed(np.round(samples))
    d = lengths.from_buckets(VLLM_TOKEN_BOUNDS, cum, total, count)
    assert d is not None
    true_p90 = float(np.quantile(samples, 0.9))
    two_moment = lengths.lognormal(float(samples.mean()), float(samples.var() / samples.mean() ** 2))
    assert abs(d.quantile_tokens(0.9) / true_p90 - 1) < 0.15
    assert two_moment.quantile_tokens(0.9) / true_p90 - 1 < -0.2


@pytest.mark.parametrize(
    ("cum", "total", "count"),
    [
        pytest.param([0.0] * 15, 0.0, 0.0, id="no-observations"),
        pytest.param([5.0, 3.0, *([5.0] * 13)], 100.0, 5.0, id="decreasing-counts"),
        pytest.param([float("nan")] * 15, 100.0, 5.0, id="nan-counts"),
        pytest.param([1.0] * 15, float("inf"), 1.0, id="infinite-sum"),
    ],
)
def test_from_buckets_refuses_what_is_not_a_histogram(cum: list[float], total: float, count: float) -> None:
    assert lengths.from_buckets(VLLM_TOKEN_BOUNDS, cum, total, count) is None


def test_with_mean_scales_the_shape() -> None:
    d = lengths.lognormal(1000.0, 1.0)
    scaled = d.with_mean(2500.0)
    assert scaled.mean_tokens == pytest.approx(2500.0)
    assert scaled.cv2 == pytest.approx(d.cv2)
