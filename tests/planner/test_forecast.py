"""Holt / EWMA forecasting: follows ramps, stays put on flat load, state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from tokenscale.planner import forecast as fc


def _run(values: list[float], method: str, dt: float = 30.0) -> fc.SeriesState:
    state = None
    for i, v in enumerate(values):
        state = fc.update(state, v, i * dt, method)  # type: ignore[arg-type]
    assert state is not None
    return state


@pytest.mark.parametrize(
    ("method", "horizon", "low", "high"),
    [
        pytest.param("holt", 180.0, 95.0, 125.0, id="holt-extrapolates-ramp"),
        pytest.param("ewma", 180.0, 70.0, 90.0, id="ewma-lags-ramp"),
        pytest.param("none", 180.0, 87.0, 87.0, id="none-is-last-value"),
    ],
)
def test_ramp(method: str, horizon: float, low: float, high: float) -> None:
    values = [10.0 + 3.0 * i for i in range(27)]  # +0.1 req/s per second; last = 88
    state = _run(values, method)
    point = fc.forecast(state, horizon, 0.9, observed=values[-1]).point
    assert low <= point <= high + 1.0


def test_flat_load_has_no_headroom() -> None:
    state = _run([50.0] * 20, "holt")
    f = fc.forecast(state, 180.0, 0.9, observed=50.0)
    assert f.point == pytest.approx(50.0) and f.error_quantile == pytest.approx(0.0) and f.upper == pytest.approx(50.0)


def test_bursty_load_gets_headroom_from_errors() -> None:
    rng = np.random.default_rng(7)
    values = list(50.0 * rng.lognormal(0.0, 0.3, size=40))
    state = _run(values, "holt")
    f = fc.forecast(state, 60.0, 0.9, observed=values[-1])
    assert f.error_quantile > 0.1
    assert f.upper >= max(f.point, values[-1]) * (1 + f.error_quantile) - 1e-9


def test_never_below_observed() -> None:
    state = _run([100.0 - 3.0 * i for i in range(20)], "holt")
    f = fc.forecast(state, 600.0, 0.9, observed=43.0)
    assert f.point < 43.0 and f.upper >= 43.0


def test_state_round_trip() -> None:
    state = _run([1.0, 2.0, 4.0, 3.0], "holt")
    assert fc.SeriesState.from_list(state.to_list()) == state
    assert fc.SeriesState.from_list([1.0, float("nan"), 0.0]) is None
    assert fc.SeriesState.from_list([1.0]) is None


@pytest.mark.parametrize(
    ("before", "after", "error"),
    [
        pytest.param(5.0, 30.0, 25.0 / 30.0, id="step-up-bounded-by-the-new-level"),
        pytest.param(30.0, 5.0, -25.0 / 30.0, id="step-down-symmetric"),
        pytest.param(10.0, 10.0, 0.0, id="steady"),
    ],
)
def test_one_step_errors_are_relative_to_the_larger_value(before: float, after: float, error: float) -> None:
    state = fc.update(None, before, 0.0, "ewma")
    state = fc.update(state, before, 30.0, "ewma")
    state = fc.update(state, after, 60.0, "ewma")
    assert state.errors[-1] == pytest.approx(error)
    assert -1.0 < state.errors[-1] < 1.0
