"""Cold starts measured on the pools' own scale-ups: the forecast horizon `plan()` plans over.

Called by `planner.plan` every cycle (`advance`, with the replicas the cycle saw) and by whoever
writes a decision's scale-ups (`started`: the operator's `reconcile`, the simulator's tokenscale
policy). A scale-up is timed from the cycle that wrote it to the first cycle that sees that many
replicas ready, less half an interval: they became ready at some moment since the cycle before,
which saw them starting, and the midpoint of that interval is the unbiased estimate (timed to the
cycle alone, a cold start reads up to one interval long, half of one on average). The sample is blended with the
previous measurement (weight `SMOOTHING`), since one node's image pull is not every node's. The
horizon is the slowest pool's measurement, or `spec.forecast.coldStart` before any. The state lives
in status (`status.planner_state`), per pool: `coldStartSeconds`, `scaleUpTime`, `scaleUpReplicas`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tokenscale.api import Role
from tokenscale.planner.observation import ReplicaCounts

SMOOTHING = 0.5  # weight of a new cold-start measurement against the previous one


@dataclass(frozen=True)
class ScaleUp:
    """A scale-up being timed: when it was written (Unix seconds) and the replicas it asked for."""

    started_s: float
    replicas: int


@dataclass(frozen=True)
class ColdStarts:
    """Measured cold start per pool (seconds), and the scale-ups still being timed."""

    measured_s: Mapping[Role, float] = field(default_factory=dict)
    timing: Mapping[Role, ScaleUp] = field(default_factory=dict)

    def horizon_s(self) -> float | None:
        """The slowest pool's measured cold start; None before any was measured."""
        return max(self.measured_s.values()) if self.measured_s else None


def advance(
    previous: ColdStarts, replicas: Mapping[Role, ReplicaCounts], now_s: float, interval_s: float
) -> ColdStarts:
    """The cold starts after a cycle that saw `replicas` (current and ready) of each pool, `interval_s`
    after the one before.

    A timed scale-up whose replicas are all ready becomes a measurement; one still starting is
    timed on; one scaled back below its count before it was ready is dropped (nothing to time).
    Pools not in `replicas` are left out.
    """
    measured: dict[Role, float] = {}
    timing: dict[Role, ScaleUp] = {}
    for role, counts in replicas.items():
        prior = previous.measured_s.get(role)
        if prior is not None:
            measured[role] = prior
        up = previous.timing.get(role)
        if up is None:
            continue
        if counts.ready >= up.replicas:
            sample = max(now_s - up.started_s - interval_s / 2.0, 0.0)
            measured[role] = sample if prior is None else SMOOTHING * sample + (1 - SMOOTHING) * prior
        elif counts.current >= up.replicas:
            timing[role] = up
    return ColdStarts(measured, timing)


def started(cold: ColdStarts, scaled_up: Mapping[Role, int], now_s: float) -> ColdStarts:
    """Start timing the scale-ups written at `now_s` (pool → replicas asked), where none is timed yet."""
    timing = dict(cold.timing)
    for role, replicas in scaled_up.items():
        timing.setdefault(role, ScaleUp(now_s, replicas))
    return ColdStarts(cold.measured_s, timing)
