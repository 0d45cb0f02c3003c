"""The scaling policies the simulator compares: tokenscale, static, hpa and dynamo.

Called by `sim.loop` every control interval with what the fleet would export (`ControlView`).
Each policy is a pure step `decide(now_s, view, state) -> (counts, state)` over a frozen state,
so runs are reproducible and the same inputs give the same decisions.

- `tokenscale`: the planner's `plan()`, exactly as the operator calls it.
- `static`: fixed counts, sized by the planner's model for the trace's peak minute (the usual
  "provision for the peak" practice, given the benefit of a good model).
- `hpa`: the Kubernetes HPA algorithm (desired = ceil(current · metric / target), 10% tolerance,
  15 s period, 300 s scale-down stabilization, default scale-up policy max(+100%, +4 pods) per
  15 s) on a utilization target per pool: busy fraction of prefill replicas, and the larger of
  batch occupancy and KV use for decode. (kubernetes.io, "Horizontal Pod Autoscaling",
  algorithm details and default behavior.)
- `dynamo`: NVIDIA Dynamo's throughput-based SLA planner as its design docs describe it: every
  180 s, predict the next interval's request count, ISL and OSL (constant predictor); correction
  factors actual/expected TTFT and ITL; prefill replicas = ceil(req·ISL/interval·min(1, c_p) /
  thpt_per_gpu(ISL) / gpus), decode replicas = ceil(req·OSL/interval / thpt_per_gpu(ITL/c_d,
  ISL + OSL/2) / gpus), with the throughput interpolated from a profile of the fleet's true
  performance (Dynamo profiles the deployment before it runs). Mean-based: no queueing tail.
The references every policy is measured against (`best-static`, `clairvoyant`) are not policies:
`sim.references` finds them by searching fleets with the simulator, never with the planner's model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from tokenscale.api import ROLES_BY_MODE, InferencePoolSpec, Role
from tokenscale.planner import plan as planner
from tokenscale.planner import sizing
from tokenscale.planner.observation import Observation
from tokenscale.planner.perf import ReplicaPerformance

Counts = dict[Role, int]

POLICY_NAMES = ("tokenscale", "static", "hpa", "dynamo")


@dataclass(frozen=True)
class ControlView:
    """What a controller can see at the end of an interval."""

    observation: Observation
    utilization: Mapping[Role, float]  # busy fraction of the pool over the interval, 0..1+
    ttft_mean_s: float | None
    itl_mean_s: float | None
    requests_in_interval: int
    interval_s: float


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    @property
    def cold_start(self) -> bool:
        """Whether replicas it adds take the cold start (a static fleet is provisioned beforehand)."""

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, object]: ...

    def decide(self, now_s: float, view: ControlView, state: object) -> tuple[Counts, object]: ...


def _bounded(spec: InferencePoolSpec, role: Role, value: int) -> int:
    pool = spec.active_pools()[role]
    return max(pool.min_replicas, min(pool.max_replicas, value))


def size_for(spec: InferencePoolSpec, load: sizing.Load, perf: Mapping[Role, ReplicaPerformance]) -> Counts:
    """Fewest replicas per pool meeting the objectives at `load` (no policy steps), within min/max."""
    sized = planner.size_pools(spec, load, perf)  # the same sizing plan() runs
    out: Counts = {}
    for role, s in sized.items():
        idx = s.smallest_feasible()
        value = int(s.counts[idx]) if idx is not None else int(s.counts[-1])
        out[role] = _bounded(spec, role, value)
    return out


# --- tokenscale ------------------------------------------------------------------------------


@dataclass
class TokenscalePolicy:
    spec: InferencePoolSpec
    performance: Mapping[Role, ReplicaPerformance]
    name: str = "tokenscale"
    cold_start: bool = True

    @property
    def interval_s(self) -> float:
        return self.spec.interval.seconds

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, object]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, planner.PlannerState()

    def decide(self, now_s: float, view: ControlView, state: object) -> tuple[Counts, object]:
        assert isinstance(state, planner.PlannerState)
        decision = planner.plan(self.spec, view.observation, state, now_s, self.performance)
        return {r: d.desired_replicas for r, d in decision.pools.items()}, decision.state


# --- static ----------------------------------------------------------------------------------


@dataclass
class StaticPolicy:
    counts: Counts
    name: str = "static"
    interval_s: float = 60.0
    cold_start: bool = False  # provisioned before the run starts

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, object]:
        return dict(self.counts), None

    def decide(self, now_s: float, view: ControlView, state: object) -> tuple[Counts, object]:
        return dict(self.counts), None


# --- hpa -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HpaState:
    history: tuple[tuple[float, Counts], ...] = ()


@dataclass
class HpaPolicy:
    spec: InferencePoolSpec
    target_utilization: float = 0.7
    name: str = "hpa"
    interval_s: float = 15.0
    cold_start: bool = True
    tolerance: float = 0.1
    down_window_s: float = 300.0

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, object]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, HpaState()

    def decide(self, now_s: float, view: ControlView, state: object) -> tuple[Counts, object]:
        assert isinstance(state, HpaState)
        raw: Counts = {}
        out: Counts = {}
        for role in ROLES_BY_MODE[self.spec.mode]:
            current = view.observation.replicas[role].current
            ready = max(view.observation.replicas[role].ready, 1)
            ratio = view.utilization.get(role, 0.0) / self.target_utilization
            # HPA computes the ratio over ready pods and skips changes within the tolerance.
            desired = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(ratio * ready)
            raw[role] = desired
            if desired < current:
                recent = [c[role] for t, c in state.history if now_s - t < self.down_window_s]
                desired = min(max([desired, *recent]), current)
            elif desired > current:
                desired = min(desired, max(2 * current, current + 4))
            out[role] = _bounded(self.spec, role, desired)
        history = tuple((t, c) for t, c in state.history if now_s - t < self.down_window_s) + ((now_s, raw),)
        return out, HpaState(history)


# --- dynamo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamoState:
    prefill_correction: float = 1.0
    decode_correction: float = 1.0


@dataclass
class DynamoPolicy:
    spec: InferencePoolSpec
    profile: Mapping[Role, ReplicaPerformance]  # "profiled": the fleet's true performance
    name: str = "dynamo"
    interval_s: float = 180.0
    cold_start: bool = True

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, object]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, DynamoState()

    def decide(self, now_s: float, view: ControlView, state: object) -> tuple[Counts, object]:
        assert isinstance(state, DynamoState)
        obs = view.observation
        if obs.request_rate_per_s is None or obs.isl_mean_tokens is None or obs.osl_mean_tokens is None:
            return {r: c.current for r, c in obs.replicas.items()}, state
        rate, isl, osl = obs.request_rate_per_s, obs.isl_mean_tokens, obs.osl_mean_tokens
        pools = self.spec.active_pools()
        itl_target = self.spec.objectives.tpot.target.seconds
        if self.spec.mode == "Aggregated":
            perf = self.profile["aggregated"]
            d_corr = self._decode_correction(view, perf, rate, isl, osl, "aggregated", state)
            per_gpu = _decode_thpt_per_gpu(
                perf, itl_target / d_corr, isl + osl / 2, pools["aggregated"].gpus_per_replica
            )
            n = math.ceil(rate * osl / per_gpu / pools["aggregated"].gpus_per_replica) if per_gpu > 0 else 10**6
            return {"aggregated": _bounded(self.spec, "aggregated", n)}, replace(state, decode_correction=d_corr)
        p_perf, d_perf = self.profile["prefill"], self.profile["decode"]
        expected_ttft = float(p_perf.prefill.service_time_s(isl))
        p_corr = state.prefill_correction
        if view.ttft_mean_s is not None and expected_ttft > 0:
            p_corr = view.ttft_mean_s / expected_ttft
        d_corr = self._decode_correction(view, d_perf, rate, isl, osl, "decode", state)
        gp, gd = pools["prefill"].gpus_per_replica, pools["decode"].gpus_per_replica
        prefill_thpt_per_gpu = isl / expected_ttft / gp
        pred_prefill = rate * isl * min(1.0, p_corr)
        n_p = math.ceil(pred_prefill / prefill_thpt_per_gpu / gp)
        per_gpu = _decode_thpt_per_gpu(d_perf, itl_target / d_corr, isl + osl / 2, gd)
        n_d = math.ceil(rate * osl / per_gpu / gd) if per_gpu > 0 else 10**6
        counts: Counts = {"prefill": _bounded(self.spec, "prefill", n_p), "decode": _bounded(self.spec, "decode", n_d)}
        return counts, DynamoState(prefill_correction=p_corr, decode_correction=d_corr)

    def _decode_correction(
        self, view: ControlView, perf: ReplicaPerformance, rate: float, isl: float, osl: float, role: Role,
        state: DynamoState,
    ) -> float:  # fmt: skip
        if view.itl_mean_s is None:
            return state.decode_correction
        replicas = max(view.observation.replicas[role].ready, 1)
        running = view.observation.running_requests.get(role)
        concurrency = running / replicas if running is not None else rate * osl * view.itl_mean_s / replicas
        expected = float(perf.decode.step_time_s(max(concurrency, 1.0), isl + osl / 2))
        return view.itl_mean_s / expected if expected > 0 else state.decode_correction


def _decode_thpt_per_gpu(perf: ReplicaPerformance, itl_s: float, context_tokens: float, gpus: int) -> float:
    """Best tokens/s per GPU whose step time stays within `itl_s`: the batch solving τ(n, L) = itl_s."""
    d = perf.decode
    per_seq = d.beta_s + d.gamma_s_per_token * context_tokens
    if itl_s <= d.alpha_s or per_seq <= 0:
        return 0.0
    batch = min((itl_s - d.alpha_s) / per_seq, perf.max_batch, perf.kv_capacity_tokens / max(context_tokens, 1.0))
    return batch / float(d.step_time_s(batch, context_tokens)) / gpus


def peak_minute_load(arrival_s: np.ndarray, isl: np.ndarray, osl: np.ndarray) -> sizing.Load:
    """The load of the busiest minute of a workload (for the static policy)."""
    minutes = np.floor(arrival_s / 60.0).astype(np.int64)
    counts = np.bincount(minutes)
    peak = int(np.argmax(counts))
    sel = minutes == peak
    return load_of(arrival_s[sel], isl[sel], osl[sel], 60.0)


def load_of(arrival_s: np.ndarray, isl: np.ndarray, osl: np.ndarray, duration_s: float) -> sizing.Load:
    """Rate, length means and cv² of a set of requests over a duration."""
    if arrival_s.size == 0:
        return sizing.Load(0.0, 1.0, 1.0)
    isl_f, osl_f = isl.astype(np.float64), osl.astype(np.float64)
    gaps = np.diff(np.sort(arrival_s))
    ca2 = float(np.var(gaps) / np.mean(gaps) ** 2) if gaps.size > 2 and np.mean(gaps) > 0 else 1.0
    return sizing.Load(
        rate_per_s=arrival_s.size / duration_s,
        isl_mean_tokens=float(isl_f.mean()),
        osl_mean_tokens=float(osl_f.mean()),
        isl_cv2=float(isl_f.var() / isl_f.mean() ** 2),
        osl_cv2=float(osl_f.var() / osl_f.mean() ** 2),
        arrival_cv2=ca2,
    )
