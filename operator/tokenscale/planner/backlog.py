"""Backlog drain: the replicas a queue that has built up needs, beyond what the steady state does.

Called by `planner.plan` every interval, for the pools whose queue it can read. Pure.

Why: the queueing model (`queueing`, `sizing`) sizes a pool for its load in steady state, and reads
that load over the metrics window. A queue that has built up is work the steady state does not
hold, and the window reads its cause late: a step of the load shows in a 5-minute window's rate by
a tenth of the step every 30 s, and a rise of the prompts' lengths is reported by the requests
that complete, after they waited. The queue shows both at once. On the benchmark's ×5 step the
prefill pool's queue held 235 requests 30 s after the step while the window's rate still read
5.3 req/s of the 20 arriving; sized by the window alone, the replicas asked for came a cold start
later, and the 2,000 requests queued by then missed the next window as well (p90 TTFT 31 s).

Model: the deterministic fluid approximation of a queue in overload (G. F. Newell, "Applications
of Queueing Theory", 2nd ed., 1982, ch. 2, "Fluid approximations"): work arrives at a replica-
seconds per second (a = λ·s̄, the offered load, with s̄ the replica-seconds one request takes) and
n replicas serve n of it, so the backlog B (replica-seconds of queued work, Q·s̄) changes at a − n
while it is positive.

- The offered load is the larger of the model's (the window's rate times s̄) and what the queue's
  growth over the last interval shows: while requests wait, every ready replica is busy, so
  a = ready + (dQ/dt)·s̄ (`offered_replicas`). The second is model-free: it holds when the rate read
  over the window lags, and when s̄ is read short.
- Replicas asked for but not ready arrive when the scale-up being timed reaches the cold start
  (`coldstart`); those asked for now, a cold start from now. The backlog when they arrive is the
  fluid queue carried over both stretches (`backlog_at_replica_s`).
- The objective at quantile q is judged over the metrics window W, so a (1 − q) share of a
  window's requests may miss it. Requests that arrive while a backlog drains wait behind it, so
  the drain is given (1 − q)·W (`budget_s`): 30 s at p90 over 5 minutes. Draining B in D seconds
  takes a + B/D replicas (`drain_count`).
- Only a queue whose own wait, B / ready, reaches the TTFT target is a backlog (`is_backlog`):
  shorter queues come and go with bursts that the steady-state model already sizes for (on the
  Azure conversation traces, queues of 1–20 requests that clear within a second).
- In a disaggregated pool the prompts' backlog moves on to decode once prefill drains it, and a
  first token waits for a decode slot: decode is sized to take it in the same budget
  (`plan._backlog_drains`).

Measured on the planning benchmark (`bench/bench_quality.py`, docs/benchmarks.md): the ×5 step
met 11 of 12 windows (10 before) at 1.07× the best static fleet's GPU-hours (1.00× before). Every
other scenario met the same windows: Mooncake 0.83× → 0.84×, a held-out Mooncake ×1.3 0.96× →
0.98×, one of the 20 draws of the built-in workload 9.2 → 9.6 GPU-hours, the rest unchanged. Two
variants measured worse: the growth read over 60 s instead of one interval lost the step's window
(it reads half the rise), and a queue counted as a backlog from half the TTFT target asked on
Mooncake for replicas the queue no longer needed when they came (0.91× for the same windows), and
on the heavy-tailed prompts (1.05× for 1.03×).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenscale.planner import sizing
from tokenscale.planner.perf import ReplicaPerformance


@dataclass(frozen=True)
class QueueSample:
    """Requests waiting in one pool at a time (seconds): the reference the queue's growth is read from."""

    time_s: float
    waiting_requests: float


@dataclass(frozen=True)
class Drain:
    """The replicas that drain one pool's backlog, and what they were sized on (for the explanation)."""

    replicas: int
    waiting_requests: float  # queued in the pool now
    handed_on_requests: float  # prefill's backlog, to come to this pool (decode)
    wait_s: float  # the queue's own wait at the ready replicas (`queue_wait_s`)
    at_arrival_requests: float  # queued when replicas asked for now could be ready
    budget_s: float

    def message(self) -> str:
        to_come = (
            f" and {self.handed_on_requests:.0f} to come from prefill's backlog" if self.handed_on_requests > 0 else ""
        )
        return (
            f"{self.waiting_requests:.0f} requests queued{to_come} ({self.wait_s:.3g} s of work for the ready "
            f"replicas); {self.replicas} replicas drain the {self.at_arrival_requests:.0f} expected a cold start "
            f"from now within {self.budget_s:.3g} s, the share of the metrics window the objective's quantile may miss"
        )


def growth_per_s(previous: QueueSample | None, now: QueueSample, interval_s: float) -> float | None:
    """dQ/dt in requests per second since `previous`, or None when there is none or it is under half an
    interval old (a difference over a few seconds is noise)."""
    if previous is None or now.time_s - previous.time_s < interval_s / 2.0:
        return None
    return (now.waiting_requests - previous.waiting_requests) / (now.time_s - previous.time_s)


def persists_and_grows(previous: QueueSample | None, now: QueueSample, interval_s: float) -> bool:
    """Whether the queue was non-empty at `previous` and has grown since (`growth_per_s`): arrivals are
    outrunning the ready replicas. A burst's queue, which comes and goes between reads, is empty at one
    of them."""
    if previous is None or not previous.waiting_requests > 0.0:
        return False
    growth = growth_per_s(previous, now, interval_s)
    return growth is not None and growth > 0.0


def next_sample(previous: QueueSample | None, now: QueueSample, interval_s: float) -> QueueSample:
    """The sample to keep: `now`, unless `previous` is under half an interval old (it stays the reference)."""
    if previous is not None and 0.0 <= now.time_s - previous.time_s < interval_s / 2.0:
        return previous
    return now


def prefill_service_s(load: sizing.Load, perf: ReplicaPerformance) -> float:
    """Replica-seconds of prefill one request takes: E[s(ISL)] (`sizing.prefill_mean_service_s`)."""
    return sizing.prefill_mean_service_s(load, perf)


def decode_service_s(load: sizing.Load, perf: ReplicaPerformance) -> float:
    """Replica-seconds of decode one request takes on a full replica: OSL · τ(b)/b.

    A full replica runs b = min(max_batch, KV capacity / (ISL + OSL)) sequences per step of τ(b), so
    each sequence holds 1/b of every step for its OSL steps.
    """
    context = sizing.batch_context_tokens(load.isl_mean_tokens, load.osl_mean_tokens, load.osl_cv2)
    per_request_tokens = max(load.isl_mean_tokens + load.osl_mean_tokens, 1.0)
    batch = max(min(float(perf.max_batch), perf.kv_capacity_tokens / per_request_tokens), 1.0)
    return load.osl_mean_tokens * float(perf.decode.step_time_s(batch, context)) / batch


def aggregated_service_s(load: sizing.Load, perf: ReplicaPerformance) -> float:
    """Replica-seconds one request takes on an aggregated replica: its prompt's prefill and its decode."""
    return prefill_service_s(load, perf) + decode_service_s(load, perf)


def offered_replicas(
    model_replicas: float, ready: int, service_s: float, waiting_requests: float, growth_per_s: float | None
) -> float:
    """Replicas' worth of work arriving: the model's, or more when a queue grows with every ready replica busy."""
    if waiting_requests <= 0.0 or growth_per_s is None:
        return model_replicas
    return max(model_replicas, ready + growth_per_s * service_s)


def queue_wait_s(waiting_requests: float, service_s: float, ready: int) -> float:
    """The queue's own wait: its work, Q·s̄ replica-seconds, shared by the ready replicas (at least one)."""
    return waiting_requests * service_s / max(ready, 1)


def is_backlog(waiting_requests: float, service_s: float, ready: int, ttft_target_s: float) -> bool:
    """Whether the queue's own wait reaches the TTFT target (a burst's queue does not)."""
    return waiting_requests > 0.0 and queue_wait_s(waiting_requests, service_s, ready) >= ttft_target_s


def backlog_at_replica_s(
    backlog_replica_s: float, offered: float, ready: int, current: int, pending_s: float, horizon_s: float
) -> float:
    """Replica-seconds still queued a cold start from now: `ready` replicas serve until the ones
    starting arrive (`pending_s` from now), then `current` do, against `offered` replicas' worth of
    arriving work (fluid; never below 0)."""
    pending_s = min(max(pending_s, 0.0), horizon_s)
    at_pending = max(backlog_replica_s + (offered - ready) * pending_s, 0.0)
    return max(at_pending + (offered - current) * (horizon_s - pending_s), 0.0)


def budget_s(quantile: float, window_s: float) -> float:
    """Seconds a backlog may take to drain: the (1 − q) share of a metrics window (the API keeps q < 1)."""
    return (1.0 - quantile) * window_s


# A count that comes out a whole number in exact arithmetic (2 + 90/30) must not round up on the
# float's last bit: 1e-9 of a replica is far below anything the inputs resolve.
_WHOLE = 1e-9


def drain_count(offered: float, backlog_replica_s: float, budget_s: float) -> int | None:
    """Replicas that serve `offered` replicas' worth of arriving work and drain `backlog_replica_s`
    within `budget_s`; None when the inputs do not give a finite count."""
    count = offered + backlog_replica_s / budget_s
    if not math.isfinite(count):
        return None
    return math.ceil(count - _WHOLE)
