"""The InferencePool status: the planner's state read back from it, and a decision written into it.

Called by `reconcile` every cycle. Pure functions between `api` status models and `planner`
values; no I/O. Everything a decision depends on round-trips through here (STYLE.md §21): the
stabilization history, the last scale time per pool, the forecasters and the online calibration,
so a restarted operator decides exactly what the old one would have.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenscale import api
from tokenscale.api import Role
from tokenscale.planner.backlog import QueueSample
from tokenscale.planner.calibration import Calibration
from tokenscale.planner.coldstart import ColdStarts, ScaleUp
from tokenscale.planner.forecast import Recent, SeriesState
from tokenscale.planner.observation import CAVEAT_KINDS, Observation, readable
from tokenscale.planner.plan import ConditionUpdate, Decision, PlannerState, Recommendation
from tokenscale.planner.reasons import CONDITION_TYPES, wire
from tokenscale.planner.tail import TailFit


def rfc3339(time_s: float) -> str:
    return dt.datetime.fromtimestamp(time_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_s(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def planner_state(status: api.InferencePoolStatus | None) -> PlannerState:
    """The planner's state as the status recorded it (the empty state when there is none)."""
    if status is None:
        return PlannerState()
    recommendations = tuple(Recommendation(r.time, r.by_role()) for r in status.recommendations)
    forecast = status.forecast
    last_scale: dict[Role, float] = {}
    cold_measured: dict[Role, float] = {}
    cold_timing: dict[Role, ScaleUp] = {}
    starting_seen: dict[Role, float] = {}
    queues: dict[Role, QueueSample] = {}
    prefill_cal: dict[Role, Calibration] = {}
    decode_cal: dict[Role, Calibration] = {}
    tail: TailFit | None = None
    for role in api.ROLES:
        pool = status.pools.get(role)
        if pool is not None and (t := epoch_s(pool.last_scale_time)) is not None:
            last_scale[role] = t
        if pool is not None and (t := epoch_s(pool.starting_seen_time)) is not None:
            starting_seen[role] = t
        if pool is not None and pool.cold_start_seconds is not None:
            cold_measured[role] = pool.cold_start_seconds
        waiting = readable("waiting", pool.waiting_requests) if pool is not None else None
        if pool is not None and (t := epoch_s(pool.waiting_time)) is not None and waiting is not None:
            queues[role] = QueueSample(t, waiting)  # a hand-edited status may hold anything
        if pool is not None and (t := epoch_s(pool.scale_up_time)) is not None and pool.scale_up_replicas is not None:
            cold_timing[role] = ScaleUp(t, pool.scale_up_replicas)
        fitted = status.performance.get(role) if status.performance else None
        if fitted is not None:
            if fitted.prefill:
                prefill_cal[role] = Calibration.from_list(fitted.prefill)
            if fitted.decode:
                decode_cal[role] = Calibration.from_list(fitted.decode)
            if fitted.arrival_cv2:
                tail = TailFit.from_list(fitted.arrival_cv2)
    return PlannerState(
        recommendations=recommendations,
        rate=SeriesState.from_list(forecast.state) if forecast else None,
        isl=SeriesState.from_list(forecast.isl_state) if forecast else None,
        osl=SeriesState.from_list(forecast.osl_state) if forecast else None,
        work=SeriesState.from_list(forecast.work_state) if forecast else None,
        modulation=(Recent.from_list(forecast.modulation_state) if forecast else None) or Recent(),
        last_scale_time_s=last_scale,
        starting_seen_s=starting_seen,
        prefill_calibration=prefill_cal,
        decode_calibration=decode_cal,
        tail=tail,
        cold_starts=ColdStarts(cold_measured, cold_timing),
        queues=queues,
    )


@dataclass(frozen=True)
class PoolFacts:
    """What the cycle learned about one pool outside the planner: /scale, readiness, node group."""

    current_replicas: int
    ready_replicas: int
    gpu_capacity: int | None = None
    gpus_free: int | None = None
    scaled_to: int | None = None  # replicas written to /scale this cycle (None: not scaled)


def merge_conditions(
    old: Sequence[api.Condition], updates: Sequence[ConditionUpdate], now_s: float
) -> list[api.Condition]:
    """Conditions in a fixed order; lastTransitionTime moves only when a condition's status changes."""
    by_type = {c.type: c for c in old}
    for u in updates:
        prev = by_type.get(u.type)
        moved = prev is None or prev.status != u.status
        by_type[u.type] = api.Condition(
            type=wire(u.type),
            status=u.status,
            reason=wire(u.reason),
            message=u.message,
            last_transition_time=rfc3339(now_s) if moved or prev is None else prev.last_transition_time,
        )
    ordered = [by_type.pop(t) for t in CONDITION_TYPES if t in by_type]
    return ordered + list(by_type.values())


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 1000:.0f}ms"


def decided_status(
    spec: api.InferencePoolSpec,
    previous: api.InferencePoolStatus | None,
    generation: int | None,
    observation: Observation,
    decision: Decision,
    facts: Mapping[Role, PoolFacts],
    extra_conditions: Sequence[ConditionUpdate],
    dry_run: bool,
    now_s: float,
) -> api.InferencePoolStatus:
    """The status after one cycle: the decision, the observation behind it, and the state to carry on."""
    prev = previous or api.InferencePoolStatus()
    state = decision.state
    pools = _pool_statuses(prev, decision, facts)
    fitted = _fitted_models(state, decision.pools)
    return api.InferencePoolStatus(
        observed_generation=generation,
        conditions=merge_conditions(prev.conditions, [*decision.conditions, *extra_conditions], now_s),
        pools=api.PoolStatuses(**pools),
        observation=_observation_status(observation),
        forecast=_forecast_status(decision),
        performance=api.FittedModels(**fitted) if fitted else None,
        recommendations=[
            api.RecommendationRecord(time=r.time_s, **{role: n for role, n in r.replicas.items()})
            for r in state.recommendations
        ],
        last_decision=api.DecisionStatus(time=rfc3339(now_s), reason=decision.reason, dry_run=dry_run),
        summary=_summary(spec, observation, pools, decision.total_gpus),
    )


def _pool_statuses(
    prev: api.InferencePoolStatus, decision: Decision, facts: Mapping[Role, PoolFacts]
) -> dict[Role, api.PoolStatus]:
    """Each pool's replicas (as written, else as read), prediction, last scale and cold start."""
    state = decision.state
    pools: dict[Role, api.PoolStatus] = {}
    for role, d in decision.pools.items():
        f = facts[role]
        old = prev.pools.get(role) or api.PoolStatus()
        last_scale = state.last_scale_time_s.get(role)
        starting = state.starting_seen_s.get(role)
        timing = state.cold_starts.timing.get(role)
        queue = state.queues.get(role)
        pools[role] = api.PoolStatus(
            current_replicas=f.scaled_to if f.scaled_to is not None else f.current_replicas,
            ready_replicas=f.ready_replicas,
            desired_replicas=d.desired_replicas,
            gpus=d.gpus,
            gpu_capacity=f.gpu_capacity,
            gpus_free=f.gpus_free,
            last_scale_time=rfc3339(last_scale) if last_scale is not None else old.last_scale_time,
            predicted_ttft_seconds=d.predicted_ttft_s,
            predicted_tpot_seconds=d.predicted_tpot_s,
            binding=wire(d.binding),
            cold_start_seconds=state.cold_starts.measured_s.get(role),
            scale_up_time=rfc3339(timing.started_s) if timing is not None else None,
            scale_up_replicas=timing.replicas if timing is not None else None,
            starting_seen_time=rfc3339(starting) if starting is not None else old.starting_seen_time,
            waiting_requests=queue.waiting_requests if queue is not None else None,
            waiting_time=rfc3339(queue.time_s) if queue is not None else None,
        )
    return pools


def _fitted_models(state: PlannerState, roles: Iterable[Role]) -> dict[Role, api.FittedModel]:
    """The online calibration and the fitted arrivals' c_a² of the pools that have them."""
    fitted: dict[Role, api.FittedModel] = {}
    for role in roles:
        pre, dec = state.prefill_calibration.get(role), state.decode_calibration.get(role)
        tail = state.tail if role == "prefill" else None
        if pre is not None or dec is not None or tail is not None:
            fitted[role] = api.FittedModel(
                prefill=pre.to_list() if pre else [],
                decode=dec.to_list() if dec else [],
                arrival_cv2=tail.to_list() if tail else [],
            )
    return fitted


def _observation_status(observation: Observation) -> api.ObservationStatus:
    """The observation the decision was made on, with its data-quality notes."""
    return api.ObservationStatus(
        time=rfc3339(observation.time_s),
        request_rate_per_second=observation.request_rate_per_s,
        isl_mean_tokens=observation.isl_mean_tokens,
        osl_mean_tokens=observation.osl_mean_tokens,
        ttft_seconds=observation.ttft_quantile_s,
        tpot_seconds=observation.tpot_quantile_s,
        waiting_requests=sum(observation.waiting_requests.values()) if observation.waiting_requests else None,
        running_requests=sum(observation.running_requests.values()) if observation.running_requests else None,
        kv_usage_fraction=observation.kv_usage_fraction,
        notes=[f"{n.signal} {n.kind}: {n.message}" for n in observation.notes],
    )


def _forecast_status(decision: Decision) -> api.ForecastStatus:
    """The planned rate and horizon, and the forecasters' state to resume from."""
    planned, state = decision.planned, decision.state
    return api.ForecastStatus(
        request_rate_per_second=planned.load.rate_per_s if planned else None,
        horizon_seconds=planned.horizon_s if planned else None,
        state=state.rate.to_list() if state.rate else [],
        isl_state=state.isl.to_list() if state.isl else [],
        osl_state=state.osl.to_list() if state.osl else [],
        work_state=state.work.to_list() if state.work else [],
        modulation_state=state.modulation.to_list(),
    )


def _summary(
    spec: api.InferencePoolSpec, observation: Observation, pools: Mapping[Role, api.PoolStatus], gpus: int
) -> api.Summary:
    """The printer columns: observed quantiles against the targets, replicas current/desired, GPUs."""
    obj = spec.objectives

    def replicas_text(role: Role) -> str | None:
        p = pools.get(role)
        return None if p is None else f"{p.current_replicas}/{p.desired_replicas}"

    return api.Summary(
        ttft=f"{_ms(observation.ttft_quantile_s)}/{_ms(obj.ttft.target.seconds)}",
        tpot=f"{_ms(observation.tpot_quantile_s)}/{_ms(obj.tpot.target.seconds)}",
        prefill=replicas_text("prefill"),
        decode=replicas_text(api.serving_role(spec.mode)),
        gpus=gpus,
    )


def condition_only_status(
    previous: api.InferencePoolStatus | None,
    generation: int | None,
    updates: Sequence[ConditionUpdate],
    now_s: float,
) -> api.InferencePoolStatus:
    """The previous status with some conditions set: for cycles that cannot decide (bad spec, paused, no target)."""
    prev = previous or api.InferencePoolStatus()
    return prev.model_copy(
        update={"observed_generation": generation, "conditions": merge_conditions(prev.conditions, updates, now_s)}
    )


def status_document(status: api.InferencePoolStatus) -> dict[str, object]:
    """The status as the API stores it (camelCase, no nulls)."""
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


# How long measured values (the observation, predictions, forecasters, calibration, condition
# messages) may wait in the operator's memory before the status is written for them alone. What a
# user acts on or the next decision needs (replicas, conditions' reasons, recommendations, scale
# times) is written the cycle it changes. A restarted operator resumes from forecasters at most
# this old. Measured at 500 pools, 30 s interval: see bench/bench_operator.py (issue 13).
STATUS_REFRESH_S = 300.0


def needs_write(new: Mapping[str, Any], stored: Mapping[str, Any] | None, decided_s: float | None) -> bool:
    """Whether the status document `new` must replace `stored`: a material change, or measured
    values older than `STATUS_REFRESH_S` in the stored one (`decided_s` is `new`'s decision time)."""
    if comparable(new) == comparable(stored):
        return False
    if material(new) != material(stored):
        return True
    written_s = epoch_s(str((stored or {}).get("lastDecision", {}).get("time") or ""))
    return written_s is None or decided_s is None or decided_s - written_s >= STATUS_REFRESH_S


# waitingRequests/waitingTime, the queue the next cycle reads the growth against, move every cycle too;
# a restarted operator that finds them minutes old reads the growth over those minutes (lower, the
# safe side: the model's load stands), and no drain is asked for on a growth read over seconds.
_MEASURED_POOL_FIELDS = (
    "predictedTtftSeconds",
    "predictedTpotSeconds",
    "startingSeenTime",
    "waitingRequests",
    "waitingTime",
)


def material(document: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status document without what is measured anew every cycle (numbers, the sentences quoting
    them, forecaster and calibration state): what a user acts on and what the next decision needs
    exactly (the recommendation history, scale times, replicas, the conditions' status and reason)."""
    if not document:
        return {}
    out = {k: v for k, v in document.items() if k not in ("lastDecision", "observation", "forecast", "performance")}
    out["dryRun"] = (document.get("lastDecision") or {}).get("dryRun")
    notes = (document.get("observation") or {}).get("notes") or []
    # "signal kind" of each signal that could not be read, without the figures; the precision
    # caveats (too few samples, coarse buckets) come and go with the traffic and block nothing.
    kinds = {str(n).split(":", 1)[0] for n in notes}
    out["notes"] = sorted(k for k in kinds if k.rpartition(" ")[2] not in CAVEAT_KINDS)
    out["conditions"] = [{k: c.get(k) for k in ("type", "status", "reason")} for c in document.get("conditions") or []]
    # startingSeenTime moves every cycle a replica is starting, and matters only once all are ready:
    # that cycle changes readyReplicas, so it is written then, holding the last starting cycle's time.
    out["pools"] = {
        role: {k: v for k, v in (pool or {}).items() if k not in _MEASURED_POOL_FIELDS}
        for role, pool in (document.get("pools") or {}).items()
    }
    summary = document.get("summary") or {}
    out["summary"] = {k: v for k, v in summary.items() if k not in ("ttft", "tpot")}
    return out


def comparable(document: Mapping[str, object] | None) -> dict[str, object]:
    """A status document without the fields that change every cycle by the clock alone."""
    if not document:
        return {}
    out = dict(document)
    last = out.pop("lastDecision", None)
    out["lastDecision"] = {"dryRun": last.get("dryRun") if isinstance(last, dict) else None}
    observation = out.get("observation")
    if isinstance(observation, dict):
        out["observation"] = {k: v for k, v in observation.items() if k != "time"}
    return out
