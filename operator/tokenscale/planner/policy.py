"""Scaling policy steps: small pure functions of plain numbers, each returning (value, reason, message).

Called by `planner.plan`, which composes them in this order for every pool:

    survivors check (N−1) → backlog drain (`planner.backlog`) → stabilization window → hold for a
    rise → hold while rising → min/max clamp → step limits → GPU budget

The order follows the Kubernetes HPA controller (recommendation, stabilization, then behaviour
limits and bounds), with the model-based checks of DESIGN.md before them. Scale-up is never
delayed unless a scale-up window is configured; scale-down waits for the window and for the
smaller pool to meet the objectives with the tolerance as margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.planner.reasons import Reason

Step = tuple[int, Reason, str]


@dataclass(frozen=True)
class Recommendation:
    """A count the planner recommended at a time (seconds)."""

    time_s: float
    replicas: int


def survivors_check(desired: int, current: int, slack_by_count: Sequence[float], tolerance: float) -> Step:
    """Scale down only to a count whose predicted latency has `tolerance` slack under the target.

    `slack_by_count[k]` is max(predicted / target) over the objectives at k replicas (index k,
    inf where unstable). Going from N to N−1 puts N/(N−1) of the load per replica on the
    survivors; the prediction at N−1 already carries that load, so the check is the prediction.
    """
    if desired >= current:
        return desired, Reason.STEADY, ""
    limit = 1.0 - tolerance
    chosen = desired
    while chosen < current and not slack_by_count[chosen] <= limit:
        chosen += 1
    if chosen == desired:
        return desired, Reason.SCALED_DOWN, ""
    return (
        chosen,
        Reason.SURVIVORS_TOO_SLOW,
        f"held at {chosen}: at {desired} replicas the predicted latency is "
        f"{slack_by_count[desired]:.0%} of target, above the {limit:.0%} the tolerance allows",
    )


def hold_for_rise(desired: int, current: int, needed_at_peak: int, peak_rise: float, cold_start_s: float) -> Step:
    """Scale down only to a count that also meets the objectives at the largest rise within a cold
    start seen in the last hour (`forecast.horizon_rise` at q = 1; scale-up sizes for the q-quantile).

    The two errors cost differently: a replica removed too early is missed for a whole cold start
    once the load rises again (the objective's windows in between are lost), while one kept too
    long costs its GPU time until the next decision. So a scale-down must survive every rise the
    load has made within a cold start lately, not only the usual one.
    """
    return _held_for_rise(
        desired,
        current,
        needed_at_peak,
        f"{needed_at_peak} replicas are needed if the load rises as much within {cold_start_s:g}s as it "
        f"has in the last hour (+{peak_rise:.0%})",
    )


def hold_while_rising(
    desired: int, current: int, needed_at_return: int, rate_now_per_s: float, rate_at_return_per_s: float
) -> Step:
    """Scale down only to a count that still meets the objectives at the load forecast two cold starts
    ahead, when the forecast rises.

    A replica removed now takes a cold start to come back: if the load then needs it, a scale-up
    asked for at the horizon serves from twice the horizon, and the windows in between are served
    by the survivors. On a falling or flat forecast the load there is no more than at the horizon,
    which the recommendation is sized for, and this step does nothing.
    """
    if rate_at_return_per_s <= rate_now_per_s:
        return desired, Reason.STEADY, ""
    return _held_for_rise(
        desired,
        current,
        needed_at_return,
        f"the load is rising, and {needed_at_return} replicas are needed at {rate_at_return_per_s:.3g} "
        "req/s, its forecast when a replica removed now could be back",
    )


def _held_for_rise(desired: int, current: int, needed: int, why: str) -> Step:
    """A scale-down to `desired` held at the `needed` count (never above `current`), or left alone."""
    if desired >= current or needed <= desired:
        return desired, Reason.STEADY, ""
    value = min(needed, current)
    return value, Reason.HELD_FOR_RISE, f"held at {value}: {why}"


def stabilize(
    desired: int,
    current: int,
    history: Sequence[Recommendation],
    now_s: float,
    up_window_s: float,
    down_window_s: float,
) -> Step:
    """HPA stabilization: scale down to the highest recommendation within the down window, and up
    to the lowest within the up window (Kubernetes HPA, `behavior.*.stabilizationWindowSeconds`).

    `history` holds earlier recommendations; the current one is `desired`. With no history (after
    a restart, STYLE.md 22) the caller seeds it with the current count, so nothing scales down
    before a whole window has passed.
    """
    if desired < current:
        recent = [r.replicas for r in history if now_s - r.time_s < down_window_s]
        floor = max([desired, *recent])
        value = min(floor, current)
        if value > desired:
            return (
                value,
                Reason.STABILIZING,
                (
                    f"scale-down to {desired} waits for the {down_window_s:g}s stabilization window "
                    f"(recommended {value} within it)"
                ),
            )
        return desired, Reason.SCALED_DOWN, ""
    if desired > current and up_window_s > 0:
        recent = [r.replicas for r in history if now_s - r.time_s < up_window_s]
        ceiling = min([desired, *recent])
        value = max(ceiling, current)
        if value < desired:
            return value, Reason.STABILIZING, f"scale-up to {desired} waits for the {up_window_s:g}s window"
    return desired, Reason.SCALED_UP if desired > current else Reason.STEADY, ""


def clamp(desired: int, min_replicas: int, max_replicas: int) -> Step:
    """Keep the count within [minReplicas, maxReplicas]."""
    if desired < min_replicas:
        return min_replicas, Reason.MIN_REPLICAS, f"held at minReplicas {min_replicas}"
    if desired > max_replicas:
        return (
            max_replicas,
            Reason.MAX_REPLICAS,
            f"needs {desired} replicas but maxReplicas is {max_replicas}; raise maxReplicas to meet the objectives",
        )
    return desired, Reason.STEADY, ""


def limit_step(
    desired: int,
    current: int,
    gpus_per_replica: int,
    max_replicas_per_step: int | None,
    max_gpus_per_step: int | None,
) -> Step:
    """Bound one change by a number of replicas and a number of GPUs, whichever is tighter."""
    limits = [math.inf]
    if max_replicas_per_step is not None:
        limits.append(max_replicas_per_step)
    if max_gpus_per_step is not None:
        limits.append(max(max_gpus_per_step // gpus_per_replica, 1))
    step = min(limits)
    if abs(desired - current) <= step:
        return desired, Reason.STEADY, ""
    value = current + int(step) * (1 if desired > current else -1)
    return value, Reason.STEP_LIMITED, f"moving {current}→{value} of {desired} (step limit {int(step)} replicas)"


def split_budget(
    desired: Sequence[int],
    minimum: Sequence[int],
    gpus_per_replica: Sequence[int],
    capacity_by_count: Sequence[npt.NDArray[np.float64]],
    budget_gpus: int,
) -> tuple[list[int], Reason, str]:
    """Fit the pools into a GPU budget, maximizing goodput when it binds; never exceed it.

    `capacity_by_count[p][k]` is the largest arrival rate pool p serves within the objectives at k
    replicas. The request path needs every pool, so goodput is min over pools of that rate; the
    split maximizes it (ties broken by fewer GPUs) by enumeration: pools are one or two, and
    counts are bounded by the budget.
    """
    gpus = sum(d * g for d, g in zip(desired, gpus_per_replica, strict=True))
    if gpus <= budget_gpus:
        return list(desired), Reason.STEADY, ""
    if len(desired) == 1:
        value = budget_gpus // gpus_per_replica[0]
        return (
            [max(min(value, desired[0]), minimum[0])],
            Reason.GPU_BUDGET,
            (f"needs {gpus} GPUs but gpuBudget is {budget_gpus}"),
        )
    (dp, dd), (mp, md), (gp, gd) = desired, minimum, gpus_per_replica
    best: tuple[float, int, int, int] | None = None
    for p in range(mp, dp + 1):
        room = budget_gpus - p * gp
        d = min(room // gd, dd)
        if d < md:
            continue
        rate = min(_at(capacity_by_count[0], p), _at(capacity_by_count[1], d))
        key = (rate, -(p * gp + d * gd), p, d)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None, "gpuBudget below the minimum is rejected at admission"
    _, _, p, d = best
    return (
        [p, d],
        Reason.GPU_BUDGET,
        (f"needs {gpus} GPUs but gpuBudget is {budget_gpus}: split {p} prefill + {d} decode for the most goodput"),
    )


def _at(values: npt.NDArray[np.float64], index: int) -> float:
    return float(values[min(index, len(values) - 1)]) if index > 0 else 0.0


def limit_to_capacity(
    desired: int, current: int, gpus_per_replica: int, free_gpus: int | None, allow_pending: bool
) -> Step:
    """Scale up only as far as the node group has free GPUs, so no replica waits Pending unseen.

    `free_gpus` is allocatable minus requested on the group's nodes, less what Pending pods aimed at
    the group already asked for; None when the pool has no node group. With `allow_pending` a
    cluster autoscaler is trusted to add nodes, and the limit is not applied.
    """
    if free_gpus is None or allow_pending or desired <= current:
        return desired, Reason.STEADY, ""
    fits = current + max(free_gpus, 0) // gpus_per_replica
    if desired <= fits:
        return desired, Reason.STEADY, ""
    return (
        fits,
        Reason.NODE_GROUP_FULL,
        f"needs {desired} replicas but the node group has {max(free_gpus, 0)} free GPUs (room for {fits}); "
        "add GPU nodes, or set nodeGroup.allowPending if a cluster autoscaler adds them",
    )
