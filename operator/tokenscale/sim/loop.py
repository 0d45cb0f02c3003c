"""The simulator's control loop: replay one workload through a `Fleet` under one policy.

Called by `tokenscale simulate` once per policy (and by the tests and benchmarks). Every policy
interval the loop reads what the engines would export over the policy's metrics window (counters
and vLLM-bucket histograms differenced between two snapshots, gauges), builds the same
`Observation` the operator builds from Prometheus, calls the policy, and applies its counts with
`Fleet.set_replicas`. The series are vLLM's, whatever `metrics.engine` says: an engine whose preset
lacks one gives the operator less than the simulator gives here (TensorRT-LLM exports no queue, so
the backlog drain never acts on it; Dynamo's frontend queue counts only for prefill). Time is
simulated; nothing reads the wall clock except the optional progress callback's caller.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from tokenscale.api import InferencePoolSpec, Role, serving_role
from tokenscale.planner import lengths
from tokenscale.planner.observation import (
    DataNote,
    LatencyHistogram,
    Observation,
    ReplicaCounts,
    dispersion_bin_s,
    moments_from_buckets,
)
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.sim import policies
from tokenscale.sim.fleet import Fleet, FleetConfig, PoolConfig
from tokenscale.sim.report import PolicyRun, Timeline
from tokenscale.sim.snapshot import FleetSnapshot
from tokenscale.sim.workload import Workload

Progress = Callable[[float], None]  # called with simulated seconds advanced
S = TypeVar("S")  # a policy's state


@dataclass(frozen=True)
class SimSetup:
    """Everything shared by the policies of one `simulate` run."""

    spec: InferencePoolSpec
    workload: Workload
    prior: Mapping[Role, ReplicaPerformance]  # what the planner believes
    truth: Mapping[Role, ReplicaPerformance]  # how the simulated replicas really perform
    cold_start_s: float
    cold_start_jitter_s: float = 0.0
    seed: int = 0
    initial: Mapping[Role, int] | None = None  # the warm fleet autoscalers start from (`references.warm_start`)


def fleet_config(setup: SimSetup, initial: Mapping[Role, int], cold_start: bool) -> FleetConfig:
    pools = setup.spec.active_pools()
    return FleetConfig(
        mode=setup.spec.mode,
        pools={r: PoolConfig(setup.truth[r], initial[r], pools[r].gpus_per_replica) for r in pools},
        cold_start_s=setup.cold_start_s if cold_start else 0.0,
        cold_start_jitter_s=setup.cold_start_jitter_s if cold_start else 0.0,
        chunk_tokens=pools["aggregated"].max_num_batched_tokens if "aggregated" in pools else 2048,
        # An engine that serves the workload's longest request has a max-model-len at least that long,
        # and vLLM's length histograms run up to it.
        max_model_len_tokens=max(32768, _longest_request_tokens(setup.workload)),
    )


def _longest_request_tokens(w: Workload) -> int:
    return int((w.isl_tokens + w.osl_tokens).max()) if w.n_requests else 0


def warm_start_counts(setup: SimSetup) -> dict[Role, int]:
    """The fleet every autoscaling policy starts from: `setup.initial` (simulate sets it to the fewest
    replicas meeting the first window, found with the simulator), else the model's count for the
    first minute's load at the true performance."""
    if setup.initial is not None:
        return dict(setup.initial)
    w = setup.workload
    first = w.arrival_s < 60.0
    load = policies.load_of(w.arrival_s[first], w.isl_tokens[first], w.osl_tokens[first], 60.0)
    return policies.size_for(setup.spec, load, setup.truth)


def observe(
    spec: InferencePoolSpec,
    earlier: FleetSnapshot,
    now: FleetSnapshot,
    arrivals_s: np.ndarray,
    roles: tuple[Role, ...],
) -> policies.ControlView:
    """The Observation (and extras) a controller would read for the window between two snapshots."""
    window_s = now.time_s - earlier.time_s
    notes: list[DataNote] = []
    rate = (now.arrivals_total - earlier.arrivals_total) / window_s if window_s > 0 else None
    prompt = now.prompt_tokens.minus(earlier.prompt_tokens)
    gen = now.generation_tokens.minus(earlier.generation_tokens)
    isl_mean, isl_cv2 = moments_from_buckets(prompt.bounds, prompt.bucket_counts, prompt.sum, prompt.count)
    osl_mean, osl_cv2 = moments_from_buckets(gen.bounds, gen.bucket_counts, gen.sum, gen.count)
    isl_shape = lengths.from_buckets(prompt.bounds, prompt.bucket_counts, prompt.sum, prompt.count)
    for signal, value in (("isl_mean", isl_mean), ("osl_mean", osl_mean)):
        if value is None:
            notes.append(DataNote(signal, "nan", "no request finished in the window (0/0)"))
    ttft = now.ttft_s.minus(earlier.ttft_s)
    itl = now.itl_s.minus(earlier.itl_s)
    tpot = now.tpot_s.minus(earlier.tpot_s)
    prefill = now.prefill_time_s.minus(earlier.prefill_time_s)
    q_ttft, q_tpot = spec.objectives.ttft.quantile, spec.objectives.tpot.quantile
    replicas = {r: ReplicaCounts(now.pools[r].replicas_current, now.pools[r].replicas_ready) for r in roles}
    utilization: dict[Role, float] = {}
    for r in roles:
        p, p0 = now.pools[r], earlier.pools[r]
        ready = max(p.replicas_ready, 1)
        if r == "prefill":
            busy = (p.busy_replica_seconds_total - p0.busy_replica_seconds_total) / (window_s * ready)
            utilization[r] = busy
        else:
            max_batch = spec.active_pools()[r].max_batch_size
            utilization[r] = max(p.kv_usage_fraction, p.running_requests / (ready * max_batch))
    serving = serving_role(spec.mode)
    observation = Observation(
        time_s=now.time_s,
        request_rate_per_s=rate,
        isl_mean_tokens=isl_mean,
        osl_mean_tokens=osl_mean,
        replicas=replicas,
        isl_cv2=isl_cv2,
        isl_distribution=isl_shape,
        osl_cv2=osl_cv2,
        arrival_cv2=_dispersion(arrivals_s, earlier.time_s, now.time_s),
        dispersion_bin_s=dispersion_bin_s(window_s),
        ttft_quantile_s=_nan_to_none(ttft.quantile(q_ttft)),
        ttft_histogram=LatencyHistogram.from_cumulative(ttft.bounds, ttft.bucket_counts, ttft.count),
        tpot_quantile_s=_nan_to_none(tpot.quantile(q_tpot)),
        itl_quantile_s=_nan_to_none(itl.quantile(q_tpot)),
        itl_mean_s=_nan_to_none(itl.mean()),
        prefill_time_mean_s=_nan_to_none(prefill.mean()),
        waiting_requests={r: float(now.pools[r].waiting_requests) for r in roles},
        running_requests={r: float(now.pools[r].running_requests) for r in roles},
        kv_usage_fraction=now.pools[serving].kv_usage_fraction,
        notes=tuple(notes),
    )
    return policies.ControlView(
        observation=observation,
        utilization=utilization,
        ttft_mean_s=_nan_to_none(ttft.mean()),
        itl_mean_s=_nan_to_none(itl.mean()),
        requests_in_interval=now.arrivals_total - earlier.arrivals_total,
        interval_s=window_s,
        gauges={r: now.pools[r] for r in roles},
    )


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _dispersion(arrivals_s: np.ndarray, start_s: float, end_s: float) -> float | None:
    """Index of dispersion (variance / mean) of arrival counts in bins of `dispersion_bin_s(window)`.

    What the operator reads from a counter scraped every 15 s (`promql.count_dispersion`), not the
    per-second counts the simulator knows: a policy gets no finer view of bursts than Prometheus
    gives. For a renewal process it tends to c_a² as bins grow (Cox & Lewis, 1966, §4.5).
    """
    bin_s = dispersion_bin_s(end_s - start_s)
    bins = int((end_s - start_s) // bin_s)
    if bins < 2:
        return None
    lo, hi = np.searchsorted(arrivals_s, [start_s, start_s + bins * bin_s])
    if hi - lo < 10:
        return None
    counts = np.bincount(np.floor((arrivals_s[lo:hi] - start_s) / bin_s).astype(np.int64), minlength=bins)[:bins]
    mean = counts.mean()
    return float(counts.var() / mean) if mean > 0 else None


def run_policy(
    setup: SimSetup,
    policy: policies.Policy[S],
    window_s: float,
    progress: Progress | None = None,
) -> PolicyRun:
    """Replay the workload under `policy`; return per-request outcomes, timeline and GPU use."""
    spec, w = setup.spec, setup.workload
    roles = tuple(spec.active_pools())
    own, state = policy.initial(spec)
    initial = own if policy.provisioned else warm_start_counts(setup)
    rng = np.random.default_rng(setup.seed)
    fleet = Fleet(w, fleet_config(setup, initial, policy.cold_start), rng)
    history: deque[FleetSnapshot] = deque()
    prev = fleet.snapshot(0.0)
    history.append(prev)
    rows: list[tuple[float, float, dict[Role, int], dict[Role, int], float, float]] = []
    actions = 0
    t = 0.0
    step = policy.interval_s
    while t < w.duration_s:
        t_next = min(t + step, w.duration_s)
        snap = fleet.snapshot(t_next)
        while len(history) > 1 and t_next - history[1].time_s >= window_s:
            history.popleft()
        view = observe(spec, history[0], snap, w.arrival_s, roles)
        counts, state = policy.decide(t_next, view, state)
        for role in roles:
            if counts[role] != snap.pools[role].replicas_current:
                fleet.set_replicas(role, counts[role], t_next)
                actions += 1
        interval = observe(spec, prev, snap, w.arrival_s, roles)
        rows.append(
            (
                t_next,
                interval.requests_in_interval / max(t_next - t, 1e-9),
                {r: counts[r] for r in roles},
                {r: snap.pools[r].replicas_ready for r in roles},
                interval.observation.ttft_quantile_s or math.nan,
                interval.observation.tpot_quantile_s or math.nan,
            )
        )
        history.append(snap)
        prev = snap
        if progress is not None:
            progress(t_next - t)
        t = t_next
    fleet.run_to_completion()
    end = fleet.snapshot(fleet.now_s)
    records = fleet.records()
    t_arr = np.array([r[0] for r in rows])
    timeline = Timeline(
        t_s=t_arr,
        rate_per_s=np.array([r[1] for r in rows]),
        replicas={role: np.array([r[2][role] for r in rows], dtype=np.float64) for role in roles},
        ready={role: np.array([r[3][role] for r in rows], dtype=np.float64) for role in roles},
        ttft_q_s=np.array([r[4] for r in rows]),
        tpot_q_s=np.array([r[5] for r in rows]),
    )
    return PolicyRun(
        policy=policy.name,
        arrival_s=np.asarray(records.arrival_s),
        ttft_s=np.asarray(records.ttft_s),
        tpot_s=np.asarray(records.tpot_s),
        gpu_seconds=sum(p.gpu_seconds_total for p in end.pools.values()),
        scale_actions=actions,
        timeline=timeline,
    )


def build_policies(setup: SimSetup, names: list[str]) -> list[policies.Policy[Any]]:
    """The named policies for this setup, in the order given (`policies.REGISTRY`)."""
    out: list[policies.Policy[Any]] = []
    for name in names:
        build = policies.REGISTRY.get(name)
        if build is None:
            raise ValueError(f"unknown policy {name!r}; choose from {', '.join(policies.POLICY_NAMES)}")
        out.append(build(setup))
    return out


def window_for(policy: policies.Policy[Any], spec: InferencePoolSpec) -> float:
    """The metrics window each policy reads: its own interval for HPA, Dynamo and llm-d, spec.metrics.window else."""
    return policy.metrics_window_s(spec)
