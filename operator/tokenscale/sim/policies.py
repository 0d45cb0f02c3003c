"""The scaling policies the simulator compares: tokenscale, static, hpa, dynamo and llm-d.

Called by `sim.loop` every control interval with what the fleet would export (`ControlView`).
Each policy is a pure step `decide(now_s, view, state) -> (counts, state)` over a frozen state of
its own type (`Policy[S]`), so runs are reproducible and the same inputs give the same decisions.
`REGISTRY` names them and builds each for a simulation setup: adding a policy is one class here
and one line there.

- `tokenscale`: the planner's `plan()`, exactly as the operator calls it (its scale-ups timed for the
  cold start as the operator times the ones it writes).
- `static`: fixed counts, sized by the planner's model for the trace's peak minute (the usual
  "provision for the peak" practice, given the benefit of a good model).
- `hpa`: the Kubernetes HPA algorithm (desired = ceil(current · metric / target), 10% tolerance,
  15 s period, 300 s scale-down stabilization, default scale-up policy max(+100%, +4 pods) per
  15 s) on a utilization target per pool: busy fraction of prefill replicas, and the larger of
  batch occupancy and KV use for decode. (kubernetes.io, "Horizontal Pod Autoscaling",
  algorithm details and default behavior.)
- `dynamo`: NVIDIA Dynamo Planner 1.2.1 (ai-dynamo wheel, `dynamo/planner/`), `sla` target with
  both loops. The load loop every 5 s moves each pool ±1: prefill up when the TTFT estimated for
  a new prompt behind the engine's queued prefill tokens (chunked by max_num_batched_tokens,
  priced by the profile) exceeds the target, down when the queue spread over N−1 engines keeps
  the added delay within 80% of the remaining budget; decode up when the ITL estimated at the
  engine's batch + 1 and KV tokens exceeds the target, down when N/(N−1) of them stays under 80%
  of it and fits the KV cache; a pool with replicas still starting is left alone. The throughput
  loop every 180 s sets floors from the last 180 s of demand (request count, ISL, OSL; correction
  factors actual/expected TTFT and ITL; throughput from a profile of the fleet's true performance,
  as Dynamo profiles a deployment before it runs); the GPU budget caps the result.
- `llm-d`: llm-d's token-aware KEDA autoscaling (llm-d/llm-d guides/workload-autoscaling/
  keda-epp-token-aware), one HPA per pool every 15 s: prefill replicas = ceil(in-flight prompt
  tokens (queued + prefilling) / V_P / T), V_P = chunk / s(chunk) the peak prefill throughput,
  T = 0.65·(TTFT target − ISL/V_P) (the guide's 60–70% for a p90 objective); decode replicas =
  ceil(Σ KV-cache use over decode pods / 0.8). HPA tolerance 10%; scale-up at most one pod per
  180 s, scale-down after a 300 s stabilization window and at most one pod per 300 s.
The references every policy is measured against (`best-static`, `clairvoyant`) are not policies:
`sim.references` finds them by searching fleets with the simulator, never with the planner's model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from tokenscale.api import ROLES_BY_MODE, InferencePoolSpec, Role, serving_role
from tokenscale.planner import plan as planner
from tokenscale.planner import sizing
from tokenscale.planner.observation import Observation
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.sim.snapshot import PoolSnapshot
from tokenscale.sim.workload import Workload

Counts = dict[Role, int]
S = TypeVar("S")  # a policy's state


@dataclass(frozen=True)
class ControlView:
    """What a controller can see at the end of an interval."""

    observation: Observation
    utilization: Mapping[Role, float]  # busy fraction of the pool over the interval, 0..1+
    ttft_mean_s: float | None
    itl_mean_s: float | None
    requests_in_interval: int
    interval_s: float
    # Engine and router gauges at the end of the interval, per pool: replicas, running and waiting
    # requests, KV use, and the prompt tokens queued and in prefill (what Dynamo's forward-pass
    # metrics and llm-d's EPP export; vLLM alone exports only the request counts).
    gauges: Mapping[Role, PoolSnapshot] = field(default_factory=dict)


class Policy(Protocol[S]):
    """A scaling policy with state of type S, threaded through `decide` by the loop."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    @property
    def cold_start(self) -> bool:
        """Whether replicas it adds take the cold start (a static fleet is provisioned beforehand)."""

    @property
    def provisioned(self) -> bool:
        """Whether the fleet starts at the policy's own initial counts, not the warm start every autoscaler gets."""

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        """The metrics window the policy reads (the loop differences counters over it)."""

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, S]: ...

    def decide(self, now_s: float, view: ControlView, state: S) -> tuple[Counts, S]: ...


class Setup(Protocol):
    """What a policy is built from (`sim.loop.SimSetup` is one)."""

    @property
    def spec(self) -> InferencePoolSpec: ...

    @property
    def workload(self) -> Workload: ...

    @property
    def prior(self) -> Mapping[Role, ReplicaPerformance]:
        """What the planner believes."""

    @property
    def truth(self) -> Mapping[Role, ReplicaPerformance]:
        """How the simulated replicas really perform."""


def _spec_window_s(spec: InferencePoolSpec, interval_s: float) -> float:
    """spec.metrics.window, at least one interval: what the operator reads."""
    return max(spec.metrics.window.seconds, interval_s)


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
    provisioned: bool = False

    @classmethod
    def for_setup(cls, setup: Setup) -> TokenscalePolicy:
        return cls(setup.spec, setup.prior)

    @property
    def interval_s(self) -> float:
        return self.spec.interval.seconds

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return _spec_window_s(spec, self.interval_s)

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, planner.PlannerState]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, planner.PlannerState()

    def decision(self, now_s: float, view: ControlView, state: planner.PlannerState) -> planner.Decision:
        """The planner's decision on the view; every scale-up timed for the cold start, since the loop
        writes every change (`sim.loop.run_policy`) as the operator writes its own."""
        decision = planner.plan(self.spec, view.observation, state, now_s, self.performance)
        return decision.written(decision.scale_ups())

    def decide(
        self, now_s: float, view: ControlView, state: planner.PlannerState
    ) -> tuple[Counts, planner.PlannerState]:
        decision = self.decision(now_s, view, state)
        return {r: d.desired_replicas for r, d in decision.pools.items()}, decision.state


# --- static ----------------------------------------------------------------------------------


@dataclass
class StaticPolicy:
    counts: Counts
    name: str = "static"
    interval_s: float = 60.0
    cold_start: bool = False  # provisioned before the run starts
    provisioned: bool = True

    @classmethod
    def for_setup(cls, setup: Setup) -> StaticPolicy:
        """Sized by the planner's model for the workload's peak minute."""
        w = setup.workload
        peak = peak_minute_load(w.arrival_s, w.isl_tokens, w.osl_tokens)
        return cls(size_for(setup.spec, peak, setup.prior))

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return _spec_window_s(spec, self.interval_s)

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, None]:
        return dict(self.counts), None

    def decide(self, now_s: float, view: ControlView, state: None) -> tuple[Counts, None]:
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
    provisioned: bool = False

    @classmethod
    def for_setup(cls, setup: Setup) -> HpaPolicy:
        return cls(setup.spec)

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return self.interval_s  # the utilization over its own period

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, HpaState]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, HpaState()

    def decide(self, now_s: float, view: ControlView, state: HpaState) -> tuple[Counts, HpaState]:
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
    bounds: Counts = field(default_factory=dict)  # the throughput loop's floors
    next_throughput_s: float = 0.0  # when the throughput loop runs next
    window_start_s: float = 0.0
    window_requests: float = 0.0  # requests since window_start_s
    window_measured: float = 0.0  # ... of which in intervals with length means, and their tokens
    window_prompt_tokens: float = 0.0
    window_output_tokens: float = 0.0
    isl_tokens: float = 0.0  # the latest length means seen
    osl_tokens: float = 0.0


@dataclass
class DynamoPolicy:
    """Dynamo Planner 1.2.1, `sla` target with both loops (module docstring)."""

    spec: InferencePoolSpec
    profile: Mapping[Role, ReplicaPerformance]  # "profiled": the fleet's true performance
    name: str = "dynamo"
    interval_s: float = 5.0  # load_adjustment_interval
    throughput_interval_s: float = 180.0  # throughput_adjustment_interval
    down_sensitivity: float = 0.8  # load_scaling_down_sensitivity / 100
    chunk_tokens: int = 2048  # max_num_batched_tokens
    cold_start: bool = True
    provisioned: bool = False

    @classmethod
    def for_setup(cls, setup: Setup) -> DynamoPolicy:
        return cls(setup.spec, setup.truth)

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return self.interval_s  # the last load interval

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, DynamoState]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, DynamoState()

    def decide(self, now_s: float, view: ControlView, state: DynamoState) -> tuple[Counts, DynamoState]:
        obs = view.observation
        current = {r: c.current for r, c in obs.replicas.items()}
        n = view.requests_in_interval
        state = replace(state, window_requests=state.window_requests + n)
        if obs.isl_mean_tokens is not None and obs.osl_mean_tokens is not None:
            state = replace(
                state,
                window_measured=state.window_measured + n,
                window_prompt_tokens=state.window_prompt_tokens + n * obs.isl_mean_tokens,
                window_output_tokens=state.window_output_tokens + n * obs.osl_mean_tokens,
                isl_tokens=obs.isl_mean_tokens,
                osl_tokens=obs.osl_mean_tokens,
            )
        isl, osl = state.isl_tokens, state.osl_tokens
        if now_s >= state.next_throughput_s:
            state = self._throughput_loop(now_s, view, state)
        out: Counts = {}
        for role, counts in obs.replicas.items():
            if counts.ready != counts.current:  # the planner waits while replicas start
                out[role] = counts.current
                continue
            step = self._load_step(role, view, isl, osl)
            out[role] = _bounded(self.spec, role, max(counts.current + step, state.bounds.get(role, 0)))
        return _within_budget(self.spec, out, current), state

    # Load-based loop: ±1 per tick from the engines' queued work, estimated with the profile.
    def _load_step(self, role: Role, view: ControlView, isl: float, osl: float) -> int:
        g = view.gauges.get(role)
        obj = self.spec.objectives
        if g is None or g.replicas_ready < 1:
            return 0
        n = g.replicas_ready
        if role == "prefill":
            queued = g.waiting_prompt_tokens / n

            def ttft(queue_tokens: float) -> float:
                return self._chunked_prefill_s(self.profile["prefill"], queue_tokens + isl)

            target = obj.ttft.target.seconds
            if ttft(queued) > target:
                return 1
            idle = ttft(0.0)
            if n > 1 and ttft(queued * n / (n - 1)) - idle < (target - idle) * self.down_sensitivity:
                return -1
            return 0
        perf = self.profile[role]
        batch = g.running_requests / n
        kv = (g.held_tokens + g.waiting_prompt_tokens) / n

        def itl(b: float, kv_tokens: float) -> float:
            d = perf.decode
            return float(d.alpha_s + d.beta_s * (b + 1.0) + d.gamma_s_per_token * (kv_tokens + isl + osl / 2.0))

        target = obj.tpot.target.seconds
        if itl(batch, kv) > target:
            return 1
        grown = n / (n - 1) if n > 1 else math.inf
        if (
            n > 1
            and kv * grown < perf.kv_capacity_tokens
            and itl(batch * grown, kv * grown) < target * self.down_sensitivity
        ):
            return -1
        return 0

    def _chunked_prefill_s(self, perf: ReplicaPerformance, tokens: float) -> float:
        full, rest = divmod(max(tokens, 0.0), float(self.chunk_tokens))
        chunk = float(perf.prefill.service_time_s(self.chunk_tokens))
        return full * chunk + (float(perf.prefill.service_time_s(rest)) if rest > 0 else 0.0)

    # Throughput-based loop: every 180 s, floors from the last interval's demand (as before 1.x).
    def _throughput_loop(self, now_s: float, view: ControlView, state: DynamoState) -> DynamoState:
        span = max(now_s - state.window_start_s, 1e-9)
        fresh = replace(
            state,
            next_throughput_s=now_s + self.throughput_interval_s,
            window_start_s=now_s,
            window_requests=0.0,
            window_measured=0.0,
            window_prompt_tokens=0.0,
            window_output_tokens=0.0,
        )
        if state.window_requests <= 0 or state.window_measured <= 0:
            return fresh
        rate = state.window_requests / span
        isl = state.window_prompt_tokens / state.window_measured
        osl = state.window_output_tokens / state.window_measured
        pools = self.spec.active_pools()
        itl_target = self.spec.objectives.tpot.target.seconds
        d_corr = self._decode_correction(view, rate, isl, osl, state)
        if self.spec.mode == "Aggregated":
            perf = self.profile["aggregated"]
            gpus = pools["aggregated"].gpus_per_replica
            per_gpu = _decode_thpt_per_gpu(perf, itl_target / d_corr, isl + osl / 2, gpus)
            n = math.ceil(rate * osl / per_gpu / gpus) if per_gpu > 0 else pools["aggregated"].max_replicas
            return replace(fresh, bounds={"aggregated": _bounded(self.spec, "aggregated", n)}, decode_correction=d_corr)
        p_perf, d_perf = self.profile["prefill"], self.profile["decode"]
        expected_ttft = float(p_perf.prefill.service_time_s(isl))
        p_corr = state.prefill_correction
        if view.ttft_mean_s is not None and expected_ttft > 0:
            p_corr = view.ttft_mean_s / expected_ttft
        gp, gd = pools["prefill"].gpus_per_replica, pools["decode"].gpus_per_replica
        prefill_thpt_per_gpu = isl / expected_ttft / gp
        n_p = math.ceil(rate * isl * min(1.0, p_corr) / prefill_thpt_per_gpu / gp)
        per_gpu = _decode_thpt_per_gpu(d_perf, itl_target / d_corr, isl + osl / 2, gd)
        n_d = math.ceil(rate * osl / per_gpu / gd) if per_gpu > 0 else pools["decode"].max_replicas
        bounds: Counts = {"prefill": _bounded(self.spec, "prefill", n_p), "decode": _bounded(self.spec, "decode", n_d)}
        return replace(fresh, bounds=bounds, prefill_correction=p_corr, decode_correction=d_corr)

    def _decode_correction(self, view: ControlView, rate: float, isl: float, osl: float, state: DynamoState) -> float:
        role = serving_role(self.spec.mode)
        if view.itl_mean_s is None:
            return state.decode_correction
        replicas = max(view.observation.replicas[role].ready, 1)
        running = view.observation.running_requests.get(role)
        concurrency = running / replicas if running is not None else rate * osl * view.itl_mean_s / replicas
        expected = float(self.profile[role].decode.step_time_s(max(concurrency, 1.0), isl + osl / 2))
        return view.itl_mean_s / expected if expected > 0 else state.decode_correction


def _within_budget(spec: InferencePoolSpec, wanted: Counts, current: Counts) -> Counts:
    """Dynamo's GPU budget clamp: a step that would exceed spec.gpuBudget keeps the current counts."""
    pools = spec.active_pools()
    if spec.gpu_budget is None or sum(wanted[r] * pools[r].gpus_per_replica for r in wanted) <= spec.gpu_budget:
        return wanted
    return {r: min(wanted[r], current.get(r, wanted[r])) for r in wanted}


# --- llm-d (KEDA on EPP and vLLM metrics) ----------------------------------------------------


@dataclass(frozen=True)
class LlmdState:
    history: tuple[tuple[float, Counts], ...] = ()  # raw recommendations, for the down window
    last_up_s: Mapping[Role, float] = field(default_factory=dict)
    last_down_s: Mapping[Role, float] = field(default_factory=dict)


@dataclass
class LlmdPolicy:
    """llm-d's token-aware KEDA autoscaling (module docstring), one HPA per pool."""

    spec: InferencePoolSpec
    profile: Mapping[Role, ReplicaPerformance]  # to calibrate peak prefill throughput, as the guide does
    name: str = "llm-d"
    interval_s: float = 15.0  # HPA sync period
    cold_start: bool = True
    kv_target: float = 0.8
    slo_share: float = 0.65  # of the TTFT budget left after a prompt's own prefill (guide: 60–70% for p90)
    chunk_tokens: int = 2048
    tolerance: float = 0.1
    up_every_s: float = 180.0  # at most one pod per 180 s up ...
    down_every_s: float = 300.0  # ... and per 300 s down
    down_window_s: float = 300.0
    provisioned: bool = False

    @classmethod
    def for_setup(cls, setup: Setup) -> LlmdPolicy:
        return cls(setup.spec, setup.truth)

    def metrics_window_s(self, spec: InferencePoolSpec) -> float:
        return self.interval_s  # the HPA's own period

    def initial(self, spec: InferencePoolSpec) -> tuple[Counts, LlmdState]:
        return {r: p.min_replicas for r, p in spec.active_pools().items()}, LlmdState()

    def decide(self, now_s: float, view: ControlView, state: LlmdState) -> tuple[Counts, LlmdState]:
        obs = view.observation
        raw: Counts = {}
        out: Counts = {}
        last_up, last_down = dict(state.last_up_s), dict(state.last_down_s)
        for role, counts in obs.replicas.items():
            current = counts.current
            metric, target = self._metric(role, view)
            desired = current
            if metric is not None and target > 0 and current > 0:
                ratio = metric / (target * current)
                if abs(ratio - 1.0) > self.tolerance:
                    desired = math.ceil(metric / target)
            raw[role] = desired
            if desired < current:
                recent = [c[role] for t, c in state.history if now_s - t < self.down_window_s and role in c]
                desired = min(max([desired, *recent]), current)
                if desired < current:
                    if now_s - last_down.get(role, -math.inf) < self.down_every_s:
                        desired = current
                    else:
                        desired, last_down[role] = current - 1, now_s
            elif desired > current:
                if now_s - last_up.get(role, -math.inf) < self.up_every_s:
                    desired = current
                else:
                    desired, last_up[role] = current + 1, now_s
            out[role] = _bounded(self.spec, role, desired)
        history = tuple((t, c) for t, c in state.history if now_s - t < self.down_window_s) + ((now_s, raw),)
        return out, LlmdState(history, last_up, last_down)

    def _metric(self, role: Role, view: ControlView) -> tuple[float | None, float]:
        """(the ScaledObject's query value, its AverageValue target) for one pool."""
        g = view.gauges.get(role)
        if g is None:
            return None, 0.0
        if role == "prefill":
            perf = self.profile["prefill"]
            peak_tokens_per_s = self.chunk_tokens / float(perf.prefill.service_time_s(self.chunk_tokens))
            isl = view.observation.isl_mean_tokens or 0.0
            budget_s = self.spec.objectives.ttft.target.seconds - isl / peak_tokens_per_s
            # Seconds of prefill work in flight: EPP's in-flight uncached prompt tokens over V_P.
            work_s = (g.waiting_prompt_tokens + g.held_tokens) / peak_tokens_per_s
            return work_s, max(self.slo_share * budget_s, 0.05)
        return g.kv_usage_fraction * max(g.replicas_ready, 0), self.kv_target


# --- registry ---------------------------------------------------------------------------------

# Each policy by name, built for one simulation setup. A new policy is a class above and a line here.
REGISTRY: Mapping[str, Callable[[Setup], Policy[Any]]] = {
    "tokenscale": TokenscalePolicy.for_setup,
    "static": StaticPolicy.for_setup,
    "hpa": HpaPolicy.for_setup,
    "dynamo": DynamoPolicy.for_setup,
    "llm-d": LlmdPolicy.for_setup,
}
POLICY_NAMES = tuple(REGISTRY)


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
