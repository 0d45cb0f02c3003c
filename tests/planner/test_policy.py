"""Each policy step on its own, as tables (STYLE.md 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenscale.planner import policy
from tokenscale.planner.policy import Recommendation
from tokenscale.planner.reasons import Reason


@pytest.mark.parametrize(
    ("desired", "current", "slack", "tolerance", "expected"),
    [
        pytest.param(5, 4, [math.inf, 2, 1.5, 1.1, 0.95, 0.8], 0.1, (5, Reason.STEADY), id="scale-up-untouched"),
        pytest.param(2, 4, [math.inf, 2, 0.7, 0.5, 0.4], 0.1, (2, Reason.SCALED_DOWN), id="down-with-slack"),
        pytest.param(2, 4, [math.inf, 2, 0.95, 0.85, 0.6], 0.1, (3, Reason.SURVIVORS_TOO_SLOW), id="down-held-one"),
        pytest.param(2, 4, [math.inf, 2, 0.95, 0.93, 0.6], 0.1, (4, Reason.SURVIVORS_TOO_SLOW), id="down-held-all"),
        pytest.param(1, 3, [math.inf, math.inf, 0.5, 0.4], 0.0, (2, Reason.SURVIVORS_TOO_SLOW), id="unstable-never"),
    ],
)
def test_survivors_check(
    desired: int, current: int, slack: list[float], tolerance: float, expected: tuple[int, str]
) -> None:
    value, reason, _ = policy.survivors_check(desired, current, slack, tolerance)
    assert (value, reason) == expected


H = [Recommendation(0.0, 8), Recommendation(100.0, 6), Recommendation(200.0, 5)]


@pytest.mark.parametrize(
    ("desired", "current", "history", "now", "up_w", "down_w", "expected"),
    [
        pytest.param(4, 8, H, 250.0, 0.0, 300.0, (8, Reason.STABILIZING), id="down-waits-for-highest-in-window"),
        pytest.param(4, 8, H, 350.0, 0.0, 300.0, (6, Reason.STABILIZING), id="oldest-left-window"),
        pytest.param(4, 8, H, 600.0, 0.0, 300.0, (4, Reason.SCALED_DOWN), id="window-passed"),
        pytest.param(4, 8, H, 250.0, 0.0, 0.0, (4, Reason.SCALED_DOWN), id="no-down-window"),
        pytest.param(10, 8, H, 250.0, 0.0, 300.0, (10, Reason.SCALED_UP), id="up-at-once"),
        pytest.param(
            10, 5, [Recommendation(240.0, 7)], 250.0, 60.0, 300.0, (7, Reason.STABILIZING), id="up-window-lowest"
        ),
        pytest.param(8, 8, H, 250.0, 0.0, 300.0, (8, Reason.STEADY), id="steady"),
        pytest.param(
            3, 8, [Recommendation(240.0, 8)], 250.0, 0.0, 300.0, (8, Reason.STABILIZING), id="seeded-after-restart"
        ),
    ],
)
def test_stabilize(
    desired: int,
    current: int,
    history: list[Recommendation],
    now: float,
    up_w: float,
    down_w: float,
    expected: tuple[int, str],
) -> None:
    value, reason, _ = policy.stabilize(desired, current, history, now, up_w, down_w)
    assert (value, reason) == expected


@pytest.mark.parametrize(
    ("desired", "current", "needed_at_peak", "expected"),
    [
        pytest.param(3, 6, 5, (5, Reason.HELD_FOR_RISE), id="down-held-to-what-the-peak-needs"),
        pytest.param(3, 6, 9, (6, Reason.HELD_FOR_RISE), id="never-raised-above-current"),
        pytest.param(3, 6, 3, (3, Reason.STEADY), id="peak-needs-no-more"),
        pytest.param(8, 6, 12, (8, Reason.STEADY), id="scale-up-untouched"),
        pytest.param(6, 6, 9, (6, Reason.STEADY), id="steady-untouched"),
    ],
)
def test_hold_for_rise(desired: int, current: int, needed_at_peak: int, expected: tuple[int, str]) -> None:
    value, reason, message = policy.hold_for_rise(desired, current, needed_at_peak, 0.8, 240.0)
    assert (value, reason) == expected
    assert (reason == Reason.HELD_FOR_RISE) == ("+80%" in message and "240s" in message)


@pytest.mark.parametrize(
    ("desired", "current", "needed_at_return", "rate_at_return", "expected"),
    [
        pytest.param(3, 6, 5, 14.0, (5, Reason.HELD_FOR_RISE), id="rising-holds-at-the-need"),
        pytest.param(3, 6, 8, 14.0, (6, Reason.HELD_FOR_RISE), id="never-above-current"),
        pytest.param(3, 6, 3, 14.0, (3, Reason.STEADY), id="survivors-suffice-there"),
        pytest.param(3, 6, 5, 10.0, (3, Reason.STEADY), id="flat-forecast-no-hold"),
        pytest.param(3, 6, 5, 8.0, (3, Reason.STEADY), id="falling-forecast-no-hold"),
        pytest.param(7, 6, 9, 14.0, (7, Reason.STEADY), id="scale-up-untouched"),
    ],
)
def test_hold_while_rising(
    desired: int, current: int, needed_at_return: int, rate_at_return: float, expected: tuple[int, str]
) -> None:
    value, reason, message = policy.hold_while_rising(desired, current, needed_at_return, 10.0, rate_at_return)
    assert (value, reason) == expected
    assert (reason == Reason.HELD_FOR_RISE) == ("rising" in message and "14 req/s" in message)


@pytest.mark.parametrize(
    ("desired", "lo", "hi", "expected"),
    [
        pytest.param(0, 1, 5, (1, Reason.MIN_REPLICAS), id="below-min"),
        pytest.param(9, 1, 5, (5, Reason.MAX_REPLICAS), id="above-max"),
        pytest.param(3, 1, 5, (3, Reason.STEADY), id="inside"),
        pytest.param(0, 0, 5, (0, Reason.STEADY), id="zero-allowed"),
    ],
)
def test_clamp(desired: int, lo: int, hi: int, expected: tuple[int, str]) -> None:
    value, reason, _ = policy.clamp(desired, lo, hi)
    assert (value, reason) == expected


@pytest.mark.parametrize(
    ("desired", "current", "gpus", "max_r", "max_g", "expected"),
    [
        pytest.param(10, 2, 1, None, None, (10, Reason.STEADY), id="unlimited"),
        pytest.param(10, 2, 1, 3, None, (5, Reason.STEP_LIMITED), id="replica-step-up"),
        pytest.param(1, 9, 4, None, 8, (7, Reason.STEP_LIMITED), id="gpu-step-down-tp4"),
        pytest.param(10, 2, 4, 5, 8, (4, Reason.STEP_LIMITED), id="tighter-of-both"),
        pytest.param(10, 2, 8, None, 4, (3, Reason.STEP_LIMITED), id="gpu-step-below-one-replica-still-moves"),
        pytest.param(4, 2, 1, 2, None, (4, Reason.STEADY), id="within-step"),
    ],
)
def test_limit_step(
    desired: int, current: int, gpus: int, max_r: int | None, max_g: int | None, expected: tuple[int, str]
) -> None:
    value, reason, _ = policy.limit_step(desired, current, gpus, max_r, max_g)
    assert (value, reason) == expected


def _linear(per_replica: float, n: int) -> np.ndarray:
    return np.arange(n + 1) * per_replica


@pytest.mark.parametrize(
    ("desired", "minimum", "gpus", "capacity", "budget", "expected"),
    [
        pytest.param([2, 4], [1, 1], [2, 4], [_linear(10, 8), _linear(5, 8)], 40, [2, 4], id="fits"),
        pytest.param([4, 8], [1, 1], [1, 1], [_linear(10, 8), _linear(5, 8)], 9, [3, 6], id="split-balances-rates"),
        pytest.param([4, 8], [1, 1], [2, 4], [_linear(10, 8), _linear(5, 8)], 20, [2, 4], id="tp-aware-split"),
        pytest.param([6], [1], [4], [_linear(10, 8)], 17, [4], id="single-pool"),
    ],
)
def test_split_budget(
    desired: list[int],
    minimum: list[int],
    gpus: list[int],
    capacity: list[np.ndarray],
    budget: int,
    expected: list[int],
) -> None:
    values, _, _ = policy.split_budget(desired, minimum, gpus, capacity, budget)
    assert values == expected
    assert sum(v * g for v, g in zip(values, gpus, strict=True)) <= budget


@pytest.mark.parametrize(
    ("desired", "current", "gpus_per_replica", "free", "allow_pending", "expected"),
    [
        pytest.param(6, 4, 4, None, False, (6, Reason.STEADY), id="no-node-group"),
        pytest.param(6, 4, 4, 8, False, (6, Reason.STEADY), id="fits-exactly"),
        pytest.param(6, 4, 4, 7, False, (5, Reason.NODE_GROUP_FULL), id="room-for-one-more"),
        pytest.param(6, 4, 4, 0, False, (4, Reason.NODE_GROUP_FULL), id="full-holds-current"),
        pytest.param(6, 4, 4, -3, False, (4, Reason.NODE_GROUP_FULL), id="overcommitted-holds-current"),
        pytest.param(6, 4, 4, 0, True, (6, Reason.STEADY), id="cluster-autoscaler-allowed"),
        pytest.param(2, 4, 4, 0, False, (2, Reason.STEADY), id="scale-down-never-limited"),
    ],
)
def test_limit_to_capacity(
    desired: int, current: int, gpus_per_replica: int, free: int | None, allow_pending: bool, expected: tuple[int, str]
) -> None:
    value, reason, message = policy.limit_to_capacity(desired, current, gpus_per_replica, free, allow_pending)
    assert (value, reason) == expected
    assert (message != "") == (reason == Reason.NODE_GROUP_FULL)
