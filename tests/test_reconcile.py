"""The pure steps of one operator cycle: cold-start timing and node-group limits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tokenscale import api, reconcile
from tokenscale import status as st

T0 = 1_790_000_000.0


@dataclass(frozen=True)
class _Scale:
    replicas: int
    ready_replicas: int


def _previous(**decode: object) -> api.InferencePoolStatus:
    return api.InferencePoolStatus(pools=api.PoolStatuses(decode=api.PoolStatus(**decode)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("previous", "scale", "measured", "timing"),
    [
        pytest.param(None, _Scale(4, 2), {}, {}, id="nothing-recorded"),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4),
            _Scale(4, 2),
            {},
            {"decode": (T0 - 100, 4)},
            id="still-starting-keeps-timing",
        ),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4),
            _Scale(4, 4),
            {"decode": 100.0},
            {},
            id="ready-first-measurement",
        ),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4, cold_start_seconds=200.0),
            _Scale(4, 4),
            {"decode": 150.0},
            {},
            id="ready-blended-with-previous",
        ),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4, cold_start_seconds=200.0),
            _Scale(2, 2),
            {"decode": 200.0},
            {},
            id="scaled-back-before-ready-stops-timing",
        ),
    ],
)
def test_cold_start_is_timed_from_scale_up_to_ready(
    previous: api.InferencePoolStatus | None,
    scale: _Scale,
    measured: dict[str, float],
    timing: dict[str, tuple[float, int]],
) -> None:
    got_measured, got_timing = reconcile._cold_start(previous, {"decode": scale}, T0)
    assert got_measured == pytest.approx(measured)
    assert got_timing == timing


def test_first_cycles_spread_over_the_interval_and_stay_put() -> None:
    delays = [
        reconcile.first_delay_s({"metadata": {"uid": f"uid-{i}"}, "spec": {"interval": "30s"}}) for i in range(200)
    ]
    assert all(0.0 <= d < 30.0 for d in delays)
    assert max(delays) - min(delays) > 25.0  # spread, not bunched
    again = reconcile.first_delay_s({"metadata": {"uid": "uid-7"}, "spec": {"interval": "30s"}})
    assert again == delays[7]  # the same phase after a restart
