"""The Workload value, time and rate scaling, and the synthetic generator (sim/workload.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenscale.sim.workload import (
    Bursts,
    LengthDistribution,
    Workload,
    default_synthetic_workload,
    make_workload,
    rate_scale,
    rate_shape,
    speedup,
    synthetic_workload,
)


def poisson_workload(seed: int, duration_s: float, rate_per_s: float) -> Workload:
    return synthetic_workload(np.random.default_rng(seed), duration_s, rate_per_s, shape="constant")


@pytest.mark.parametrize(
    ("arrival", "isl", "osl", "duration", "message"),
    [
        pytest.param([0.0, 2.0, 1.0], [1, 1, 1], [1, 1, 1], 2.0, "sorted", id="unsorted"),
        pytest.param([0.0, 1.0], [1, 0], [1, 1], 1.0, "≥ 1", id="zero-isl"),
        pytest.param([0.0, 1.0], [1, 1], [1, -3], 1.0, "≥ 1", id="negative-osl"),
        pytest.param([0.0, 1.0], [1], [1, 1], 1.0, "same length", id="ragged"),
        pytest.param([-1.0, 1.0], [1, 1], [1, 1], 1.0, "non-negative", id="negative-time"),
        pytest.param([0.0, 5.0], [1, 1], [1, 1], 4.0, "cover", id="duration-short"),
        pytest.param([0.0, math.nan], [1, 1], [1, 1], 4.0, "finite", id="nan-time"),
    ],
)
def test_workload_rejects_invalid(
    arrival: list[float], isl: list[int], osl: list[int], duration: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Workload("w", np.array(arrival), np.array(isl, dtype=np.int64), np.array(osl, dtype=np.int64), duration)


def test_make_workload_sorts_stably_and_shifts_to_zero() -> None:
    w = make_workload("w", [5.0, 3.0, 5.0, 4.0], [10, 20, 30, 40], [1, 2, 3, 4])
    assert w.arrival_s.tolist() == [0.0, 1.0, 2.0, 2.0]
    assert w.isl_tokens.tolist() == [20, 40, 10, 30]
    assert w.duration_s == 2.0
    assert not w.arrival_s.flags.writeable


@pytest.mark.parametrize(
    "factor", [pytest.param(2.0, id="twice"), pytest.param(0.5, id="half"), pytest.param(60.0, id="x60")]
)
def test_speedup_compresses_time_only(factor: float) -> None:
    w = poisson_workload(1, 600.0, 5.0)
    fast = speedup(w, factor)
    assert fast.n_requests == w.n_requests
    np.testing.assert_allclose(fast.arrival_s, w.arrival_s / factor)
    assert fast.duration_s == pytest.approx(w.duration_s / factor)
    assert fast.mean_rate_per_s == pytest.approx(w.mean_rate_per_s * factor)
    np.testing.assert_array_equal(fast.osl_tokens, w.osl_tokens)


@pytest.mark.parametrize(
    "factor", [pytest.param(0.0, id="zero"), pytest.param(-2.0, id="negative"), pytest.param(math.inf, id="inf")]
)
def test_scaling_rejects_bad_factors(factor: float) -> None:
    w = poisson_workload(1, 10.0, 5.0)
    with pytest.raises(ValueError, match="positive and finite"):
        speedup(w, factor)
    with pytest.raises(ValueError, match="positive and finite"):
        rate_scale(w, factor, np.random.default_rng(0))


@pytest.mark.parametrize(
    "factor",
    [
        pytest.param(0.1, id="thin-to-10pct"),
        pytest.param(0.5, id="thin-to-half"),
        pytest.param(1.0, id="identity"),
        pytest.param(1.5, id="one-and-a-half"),
        pytest.param(3.0, id="triple"),
    ],
)
def test_rate_scale_counts_and_shape(factor: float) -> None:
    w = synthetic_workload(np.random.default_rng(2), 1200.0, 5.0, shape="ramp", peak_to_base=3.0)
    scaled = rate_scale(w, factor, np.random.default_rng(3))
    n = w.n_requests
    # Variance per original request: Bernoulli thinning below 1, one Bernoulli extra copy above.
    frac = factor - math.floor(factor)
    var = factor * (1 - factor) if factor < 1 else frac * (1 - frac)
    assert abs(scaled.n_requests - factor * n) <= 5 * math.sqrt(n * var) + 1
    assert scaled.duration_s == w.duration_s
    assert np.all(np.diff(scaled.arrival_s) >= 0)
    assert scaled.arrival_s[-1] <= w.duration_s
    # The rate's shape is kept: each fifth of the run carries `factor` times its requests.
    edges = np.linspace(0.0, w.duration_s, 6)
    before = np.histogram(w.arrival_s, edges)[0]
    after = np.histogram(scaled.arrival_s, edges)[0]
    slack = 4 * np.sqrt(before * var) + 0.02 * factor * before + 1  # copies may cross a bin edge
    assert np.all(np.abs(after - factor * before) <= slack)


def test_rate_scale_integer_factor_copies_every_request_lengths() -> None:
    w = poisson_workload(4, 300.0, 3.0)
    scaled = rate_scale(w, 2.0, np.random.default_rng(5))
    assert scaled.n_requests == 2 * w.n_requests
    original = sorted(zip(w.isl_tokens.tolist(), w.osl_tokens.tolist(), strict=True))
    doubled = sorted(zip(scaled.isl_tokens.tolist(), scaled.osl_tokens.tolist(), strict=True))
    assert doubled == sorted(original + original)


@pytest.mark.parametrize(
    ("shape", "t", "expected"),
    [
        pytest.param("constant", [0.0, 500.0, 999.0], [1.0, 1.0, 1.0], id="constant"),
        pytest.param("ramp", [0.0, 200.0, 500.0, 800.0, 1000.0], [1.0, 2.0, 3.0, 2.0, 1.0], id="ramp-trapezoid"),
        pytest.param("diurnal", [0.0, 250.0, 500.0, 1000.0], [1.0, 2.0, 3.0, 1.0], id="diurnal-cosine"),
    ],
)
def test_rate_shape(shape: str, t: list[float], expected: list[float]) -> None:
    got = rate_shape(shape, np.array(t), 1000.0, 3.0, 1000.0)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize(
    ("shape", "peak_to_base", "expected_mean_multiplier"),
    [
        pytest.param("constant", 1.0, 1.0, id="constant"),
        pytest.param("ramp", 3.0, 1.0 + 2.0 * 0.6, id="ramp"),  # trapezoid: mean of min(up, down) is 0.6
        pytest.param("diurnal", 3.0, 2.0, id="diurnal"),
    ],
)
def test_synthetic_count_follows_the_rate(shape: str, peak_to_base: float, expected_mean_multiplier: float) -> None:
    duration, base = 3600.0, 4.0
    w = synthetic_workload(np.random.default_rng(7), duration, base, shape=shape, peak_to_base=peak_to_base)  # type: ignore[arg-type]
    expected = base * expected_mean_multiplier * duration
    assert abs(w.n_requests - expected) <= 4 * math.sqrt(expected)
    assert w.duration_s == duration
    assert np.all(np.diff(w.arrival_s) >= 0) and w.arrival_s[-1] < duration


def test_synthetic_is_reproducible_per_seed() -> None:
    a = default_synthetic_workload(11)
    b = default_synthetic_workload(11)
    c = default_synthetic_workload(12)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.isl_tokens, b.isl_tokens)
    assert a.n_requests != c.n_requests or not np.array_equal(a.arrival_s, c.arrival_s)


def test_bursts_occupy_their_share_of_time_and_raise_the_rate() -> None:
    bursts = Bursts(rate_multiplier=3.0, mean_calm_s=200.0, mean_burst_s=50.0)
    grid = np.arange(0.0, 200_000.0, 1.0)
    mult = bursts.multiplier_at(np.random.default_rng(8), grid, 200_000.0)
    share = float(np.mean(mult == 3.0))
    assert share == pytest.approx(50.0 / 250.0, abs=0.03)
    w = synthetic_workload(np.random.default_rng(9), 20_000.0, 2.0, shape="constant", bursts=bursts)
    # Mean rate = base · (1 + (m − 1) · burst share); the MMPP's count is over-dispersed, so 10%.
    assert w.mean_rate_per_s == pytest.approx(2.0 * (1 + 2.0 * 0.2), rel=0.10)
    gaps = np.diff(w.arrival_s)
    assert np.var(gaps) / np.mean(gaps) ** 2 > 1.1  # burstier than Poisson (c_a² = 1)


@pytest.mark.parametrize(
    ("dist", "mean", "cv", "rel"),
    [
        pytest.param(LengthDistribution(1000.0, 0.0), 1000.0, 0.0, 1e-12, id="constant-length"),
        pytest.param(LengthDistribution(1000.0, 1.0, 1, 10**9), 1000.0, 1.0, 0.05, id="lognormal-cv1"),
        pytest.param(LengthDistribution(250.0, 0.5, 1, 10**9), 250.0, 0.5, 0.05, id="lognormal-cv0.5"),
    ],
)
def test_length_distribution_moments(dist: LengthDistribution, mean: float, cv: float, rel: float) -> None:
    x = dist.sample(np.random.default_rng(10), 200_000).astype(np.float64)
    assert x.mean() == pytest.approx(mean, rel=rel)
    assert x.std() / x.mean() == pytest.approx(cv, rel=max(rel, 0.1), abs=1e-9)
    assert x.min() >= dist.min_tokens


def test_length_distribution_clips() -> None:
    x = LengthDistribution(1000.0, 3.0, 16, 4096).sample(np.random.default_rng(0), 50_000)
    assert x.min() >= 16 and x.max() == 4096


def test_default_workload_is_half_an_hour_of_ramp_and_bursts() -> None:
    w = default_synthetic_workload(0)
    assert w.duration_s == 1800.0
    assert 10_000 < w.n_requests < 30_000
    assert w.isl_tokens.mean() == pytest.approx(1000.0, rel=0.1)
    assert w.osl_tokens.mean() == pytest.approx(250.0, rel=0.1)
    edges = np.linspace(0.0, 1800.0, 11)
    per_bin = np.histogram(w.arrival_s, edges)[0]
    assert per_bin[4:6].mean() > 2.0 * per_bin[[0, -1]].mean()  # ramps up and back down
