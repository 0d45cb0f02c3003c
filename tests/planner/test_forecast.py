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
    point = fc.forecast(state, horizon, observed=values[-1]).point
    assert low <= point <= high + 1.0


def _run_with_horizon(values: list[float], horizon_s: float, dt: float = 30.0) -> fc.SeriesState:
    state = None
    for i, v in enumerate(values):
        state = fc.update(state, v, i * dt, "holt", horizon_s)
    assert state is not None
    return state


def test_flat_load_has_no_headroom() -> None:
    state = _run_with_horizon([50.0] * 20, 180.0)
    assert fc.horizon_headroom(state, 180.0, 0.9, 50.0) == pytest.approx(0.0)
    f = fc.forecast(state, 180.0, observed=50.0, headroom=0.0)
    assert f.point == pytest.approx(50.0) and f.upper == pytest.approx(50.0)


def test_jumps_within_a_cold_start_give_headroom_a_ramp_does_not() -> None:
    # A load that jumps ×1.5 for two minutes every ten: the forecaster misses every jump by ~50%.
    jumpy = [75.0 if i % 20 in (10, 11, 12, 13) else 50.0 for i in range(120)]
    assert fc.horizon_headroom(_run_with_horizon(jumpy, 240.0), 240.0, 0.9, 50.0) == pytest.approx(0.5, abs=0.05)
    # A steady ramp rises as much within a horizon, but Holt's trend already plans for it.
    ramp = [10.0 + 0.5 * i for i in range(120)]
    assert fc.horizon_headroom(_run_with_horizon(ramp, 240.0), 240.0, 0.9, ramp[-1]) < 0.02


def test_typical_is_the_quantile_of_the_last_hour_and_needs_samples() -> None:
    recent = fc.Recent()
    for i, v in enumerate([0.0, 0.3, 0.3] * 3):
        recent = recent.remember(v, i * 30.0)
    assert recent.typical(0.5) is None  # nine kept values: too few
    recent = recent.remember(0.3, 270.0)
    assert recent.typical(0.5) == pytest.approx(0.3)
    assert recent.remember(5.0, 280.0) == recent  # within the spacing: not kept
    for i in range(10, 140):  # an hour of calm later the bursts are forgotten
        recent = recent.remember(0.0, i * 30.0)
    assert recent.typical(0.5) == 0.0
    assert len(recent.history) // 2 <= fc.HISTORY_S / fc.HISTORY_SPACING_S + 1
    assert fc.Recent.from_list(recent.to_list()) == recent
    assert fc.Recent.from_list([1.0, 2.0, 3.0]) is None and fc.Recent().typical(0.5) is None


def test_before_ten_rises_the_largest_stands_in_and_an_hour_forgets() -> None:
    assert fc.horizon_headroom(_run_with_horizon([10.0], 240.0), 240.0, 0.9, 10.0) == 0.0  # no rise yet
    # Four rises, the largest +10 over its base of 10: it stands in for the 0.9-quantile (the
    # q-quantile of four lies beyond them), and for the median too.
    few = _run_with_horizon([10.0, 20.0, 12.0, 12.0, 12.0], 240.0)
    rises = fc.horizon_rises(few, 240.0, (0.5, 0.9))
    assert rises == pytest.approx((10.0, 10.0), rel=0.05)
    burst_then_calm = [10.0] * 5 + [30.0] + [10.0] * 200
    state = _run_with_horizon(burst_then_calm, 240.0)
    assert len(state.history) // 3 <= fc.HISTORY_S / fc.HISTORY_SPACING_S + 1
    assert fc.horizon_headroom(state, 240.0, 0.9, 10.0) == pytest.approx(0.0)


def test_a_past_rise_is_carried_in_load_units_not_as_a_ratio() -> None:
    # Quiet 4, a step to 20 that the forecaster missed by +16 (seven samples within a horizon of it),
    # then 20 steadily: forty samples, so the step's rises are the 0.9-quantile's neighbours.
    values = [4.0] * 20 + [20.0] * 20
    state = _run_with_horizon(values, 240.0)
    rise = fc.horizon_rise(state, 240.0, 0.9)
    assert rise == pytest.approx(16.0, rel=0.05)
    # At the busy level that rise is +80%, not the ×5 (+400%) it was against the quiet base.
    assert fc.horizon_headroom(state, 240.0, 0.9, 20.0) == pytest.approx(rise / 20.0, rel=0.02)
    assert fc.horizon_headroom(None, 240.0, 0.9, 20.0) == 0.0


def _rises_by_definition(state: fc.SeriesState, horizon_s: float, quantiles: tuple[float, ...]) -> tuple[float, ...]:
    """The module docstring's definition, pair by pair: for every t, max y over (t, t + H] − base(t)."""
    t, y, base = state.samples()
    rises = [
        max(y[j] for j in range(t.size) if t[i] < t[j] <= t[i] + horizon_s) - base[i]
        for i in range(t.size)
        if any(t[i] < t[j] <= t[i] + horizon_s for j in range(t.size))
    ]
    if not rises:
        return tuple(0.0 for _ in quantiles)
    if len(rises) < fc.MIN_HEADROOM_SAMPLES:
        return tuple(max(float(max(rises)), 0.0) for _ in quantiles)
    return tuple(max(float(r), 0.0) for r in np.quantile(rises, list(quantiles)))


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed{s}")
def test_rises_follow_their_definition_for_any_history(seed: int) -> None:
    # Any history a status can hold: irregular spacing, equal times, out of order (read back from a
    # hand-edited status), gaps longer than the horizon.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    times = np.cumsum(rng.choice([0.0, 10.0, 30.0, 31.0, 600.0], size=n, p=[0.1, 0.2, 0.5, 0.15, 0.05]))
    if seed % 2:
        rng.shuffle(times)
    triples = np.column_stack((times, rng.uniform(0, 50, n), rng.uniform(0, 50, n)))
    state = fc.SeriesState(1.0, 0.0, float(times.max()), tuple(triples.ravel().tolist()))
    quantiles = (0.5, 0.9, 1.0)
    assert fc.horizon_rises(state, 240.0, quantiles) == pytest.approx(_rises_by_definition(state, 240.0, quantiles))


def test_never_below_observed() -> None:
    state = _run([100.0 - 3.0 * i for i in range(20)], "holt")
    f = fc.forecast(state, 600.0, observed=43.0)
    assert f.point < 43.0 and f.upper >= 43.0


def test_state_round_trip() -> None:
    state = _run([1.0, 2.0, 4.0, 3.0], "holt")
    assert fc.SeriesState.from_list(state.to_list()) == state
    kept = _run_with_horizon([1.0, 2.0, 4.0, 3.0], 240.0)
    assert len(kept.history) == 12 and fc.SeriesState.from_list(kept.to_list()) == kept
    assert fc.SeriesState.from_list([1.0, float("nan"), 0.0]) is None
    assert fc.SeriesState.from_list([1.0]) is None
