"""References measured by simulation, never by the planner's model: `best-static` and `clairvoyant`.

Called by `tokenscale simulate` and `bench/bench_quality.py`. A reference sized by the planner's
own model inherits its errors and cannot reveal them, so both search replica counts with the
simulated fleet itself (its true performance, no cold start):

- `best-static`: the smallest constant fleet (fewest GPUs) whose replay meets both objectives in at
  least `STATIC_WINDOW_SHARE` of the 5-minute windows. What a team that provisions for its traffic
  by load-testing would run; an autoscaler must beat it on GPU-hours to earn its keep.
- `clairvoyant`: for each 5-minute window on its own, the fewest GPUs that meet that window,
  verified by simulating it (from a minute before, so queues are warm); summed over windows. It
  knows the future and starts replicas instantly: no deployable policy reaches it.
- `clairvoyant-late`: one replay that asks, as each window starts, for that window's clairvoyant
  counts, and waits the cold start for them like any autoscaler. It knows each window's need the
  moment the window begins, which no policy reading metrics does; so a window it misses is one that
  sizing for the load as it comes cannot meet: only capacity held before the rise (foresight, or
  spare replicas all along, as a peak-sized static fleet holds) meets it.

Search: met windows grow with each pool's count (more replicas never slow a request in this fleet),
so each pool is bisected with the other at its maximum, then the other with the first fixed.
Windows are searched in parallel across cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tokenscale.api import Role
from tokenscale.sim import loop
from tokenscale.sim.fleet import Fleet
from tokenscale.sim.report import WINDOW_S, window_flags
from tokenscale.sim.workload import Workload

STATIC_WINDOW_SHARE = 0.99
WARMUP_S = 60.0  # a window is replayed from this long before it, so it starts with warm queues

Counts = dict[Role, int]


@dataclass(frozen=True)
class Reference:
    """A reference fleet: its GPU-hours, the share of windows it meets, and its counts.

    `counts` is one fleet for best-static, and per window (in order) for clairvoyant.
    """

    name: str
    gpu_hours: float
    windows_meeting_both: float
    counts: tuple[Mapping[Role, int], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "gpu_hours": self.gpu_hours,
            "windows_meeting_both": self.windows_meeting_both,
            "counts": [dict(c) for c in self.counts],
        }


def _met(setup: loop.SimSetup, counts: Mapping[Role, int], start_s: float, end_s: float) -> list[bool]:
    """Replay the requests of [start − warm-up, end) on a fixed fleet; met flags of the windows in [start, end)."""
    w = setup.workload
    lo, hi = np.searchsorted(w.arrival_s, [max(start_s - WARMUP_S, 0.0), end_s])
    origin = float(w.arrival_s[lo]) if hi > lo else start_s
    part = Workload(w.name, w.arrival_s[lo:hi] - origin, w.isl_tokens[lo:hi], w.osl_tokens[lo:hi], end_s - origin)
    fleet = Fleet(part, loop.fleet_config(replace(setup, workload=part), dict(counts), cold_start=False),
                  np.random.default_rng(setup.seed))  # fmt: skip
    fleet.run_to_completion()
    r = fleet.records()
    inside = r.arrival_s + origin >= start_s
    flags = window_flags(
        r.arrival_s[inside] + origin - start_s, r.ttft_s[inside], r.tpot_s[inside], setup.spec.objectives
    )
    return list(flags.values())


def _smallest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """Smallest n in [low, high] with ok(n), assuming ok is monotone; None when ok(high) is false."""
    if not ok(high):
        return None
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _search(setup: loop.SimSetup, good: Callable[[Counts], bool]) -> Counts | None:
    """Fewest replicas per pool for which `good` holds: each pool bisected with the others at maximum."""
    pools = setup.spec.active_pools()
    counts: Counts = {r: p.max_replicas for r, p in pools.items()}
    if not good(counts):
        return None
    # The pool with more GPUs at stake goes first; then the other given it.
    order = sorted(pools, key=lambda r: -pools[r].max_replicas * pools[r].gpus_per_replica)
    for role in order:

        def with_role(n: int, role: Role = role) -> bool:
            return good({**counts, role: n})

        found = _smallest(pools[role].min_replicas, counts[role], with_role)
        counts[role] = found if found is not None else counts[role]
    return counts


def _gpus(setup: loop.SimSetup, counts: Mapping[Role, int]) -> int:
    pools = setup.spec.active_pools()
    return sum(counts[r] * pools[r].gpus_per_replica for r in counts)


def best_static(setup: loop.SimSetup) -> Reference:
    """The smallest constant fleet meeting both objectives in ≥ 99% of the 5-minute windows."""
    duration = setup.workload.duration_s

    def good(counts: Counts) -> bool:
        flags = _met(setup, counts, 0.0, duration)
        return bool(flags) and sum(flags) / len(flags) >= STATIC_WINDOW_SHARE

    found = _search(setup, good)
    counts = found if found is not None else {r: p.max_replicas for r, p in setup.spec.active_pools().items()}
    flags = _met(setup, counts, 0.0, duration)
    return Reference(
        "best-static",
        _gpus(setup, counts) * duration / 3600.0,
        sum(flags) / len(flags) if flags else math.nan,
        (counts,),
    )


def _window_reference(args: tuple[loop.SimSetup, float, float]) -> tuple[Counts, bool]:
    setup, start, end = args

    def good(counts: Counts) -> bool:
        return all(_met(setup, counts, start, end))

    found = _search(setup, good)
    if found is None:
        return {r: p.max_replicas for r, p in setup.spec.active_pools().items()}, False
    return found, True


def warm_start(setup: loop.SimSetup) -> Counts:
    """The fewest replicas meeting the first 5-minute window (simulated): where every autoscaler starts."""
    end = min(WINDOW_S, setup.workload.duration_s)
    counts, _ = _window_reference((setup, 0.0, end))
    return counts


def clairvoyant(setup: loop.SimSetup, workers: int | None = None) -> Reference:
    """Per 5-minute window the fewest GPUs meeting it (simulated, no cold start), summed."""
    duration = setup.workload.duration_s
    starts = np.arange(0.0, duration, WINDOW_S)
    windows = [(setup, float(s), float(min(s + WINDOW_S, duration))) for s in starts]
    arrivals = setup.workload.arrival_s
    busy = [np.searchsorted(arrivals, w[2]) > np.searchsorted(arrivals, w[1]) for w in windows]
    jobs = [w for w, b in zip(windows, busy, strict=True) if b]
    # A window without requests still holds each pool's minimum (no deployable fleet goes below it).
    idle_gpu_s = sum(
        _gpus(setup, {r: p.min_replicas for r, p in setup.spec.active_pools().items()}) * (end - start)
        for (_, start, end), b in zip(windows, busy, strict=True)
        if not b
    )
    n = workers or os.cpu_count() or 1
    if n > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(n, len(jobs))) as pool:
            results = list(pool.map(_window_reference, jobs))
    else:
        results = [_window_reference(j) for j in jobs]
    gpu_s = idle_gpu_s + sum(
        _gpus(setup, c) * (end - start) for (c, _), (_, start, end) in zip(results, jobs, strict=True)
    )
    met = [ok for _, ok in results]
    found = iter(c for c, _ in results)
    minimum = {r: p.min_replicas for r, p in setup.spec.active_pools().items()}
    per_window = tuple(next(found) if b else dict(minimum) for b in busy)
    return Reference("clairvoyant", gpu_s / 3600.0, sum(met) / len(met) if met else math.nan, per_window)


@dataclass(frozen=True)
class _FollowWindows:
    """A policy asking, as each window starts, for that window's counts (`clairvoyant-late`)."""

    counts: tuple[Mapping[Role, int], ...]
    name: str = "clairvoyant-late"
    interval_s: float = 15.0
    cold_start: bool = True
    provisioned: bool = True  # the first window's counts are up when the replay starts

    def metrics_window_s(self, spec: Any) -> float:
        return WINDOW_S  # it reads no metrics

    def initial(self, spec: Any) -> tuple[Counts, None]:
        return dict(self.counts[0]), None

    def decide(self, now_s: float, view: Any, state: None) -> tuple[Counts, None]:
        return dict(self.counts[min(int(now_s // WINDOW_S), len(self.counts) - 1)]), None


def clairvoyant_late(setup: loop.SimSetup, clairvoyant_ref: Reference) -> Reference:
    """The clairvoyant counts of each window requested as it starts, through the cold start (one replay)."""
    policy = _FollowWindows(clairvoyant_ref.counts)
    run = loop.run_policy(setup, policy, WINDOW_S)
    flags = window_flags(run.arrival_s, run.ttft_s, run.tpot_s, setup.spec.objectives)
    met = sum(flags.values()) / len(flags) if flags else math.nan
    return Reference(policy.name, run.gpu_seconds / 3600.0, met, clairvoyant_ref.counts)
