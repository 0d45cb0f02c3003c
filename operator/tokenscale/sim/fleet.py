"""Event-driven model of a served LLM fleet: disaggregated (prefill + decode pools) or aggregated.

`simulate`'s control loop drives one `Fleet` per policy: `run_until(t)` to the next decision time,
`snapshot(t)` to read what the engines would export, `set_replicas(role, n, t)` to act, and
`records()` at the end for per-request latencies. Time and randomness are arguments (the workload's
arrival times, a numpy `Generator` for cold-start jitter); nothing reads the wall clock.

Events happen per request and per batch change, never per token (heapq, plain floats):

Disaggregated
  Prefill: one FCFS queue feeds the pool; a free ready replica takes the head (and, with
  `prefill_batch_tokens` > 0, the following prompts while their tokens fit the budget) and serves the
  batch for s = Σ (a + b·ISL + c·ISL²) − (k−1)·a (one fixed cost per batch). Then each request's KV
  cache moves to decode in kv_transfer_s_per_token · ISL (the prefill pool's figure).
  Decode: one FCFS admission queue for the pool (an idealized router: the head goes to the ready
  replica with the fewest sequences that has room). A replica admits while n < max_batch and the KV
  reserved, Σ (ISL + OSL) over its sequences, fits kv_capacity_tokens (reserved in full at admission:
  no preemption is modelled; a request larger than the whole cache runs alone on an empty replica).
  Continuous batching is processor sharing with a step counter g per replica: every sequence in the
  batch advances one token per step, a step of n sequences with mean context L takes
  τ(n, L) = α + β·n + γ·n·L (DistServe, Zhong et al., OSDI 2024, §3). A sequence admitted at g0 with
  OSL tokens to generate finishes when g reaches g0 + OSL. Context grows by one token per step, so
  between batch changes τ is linear in g: τ(g) = A + B·g with A = α + β·n + γ·Σ(ISL_i − g0_i) and
  B = γ·n; the time from g1 to g2 is ∫τ = (g2 − g1)·(τ(g1) + B·(g2 − g1)/2), inverted in closed form.
  The next event of a replica is its earliest finish; τ is recomputed on every batch change. (The
  context grows continuously in this fluid view: a step's mean context is its mid-step value.)
  TTFT (the user-facing one, as the decode engine or a frontend reports it) = arrival → prefill
  queue + prefill + KV transfer + decode admission wait + the first decode step (g0 + 1). The
  prefill engine's own first token is not user-visible in vLLM's P/D disaggregation.

Aggregated
  One pool, one FCFS queue. A replica admits the head while n_running < max_batch, its KV fits, and
  its unprocessed prompt tokens are below the step's prompt room (so admitted work is work it can
  start). Each step carries the decode batch plus a chunk of waiting prompt tokens, FCFS, up to
  `chunk_tokens` in total including one token per decode sequence (chunked prefill, as vLLM's
  `max_num_batched_tokens`). Step time = τ(n, L) + b·chunk + c·((p + chunk)² − p²) for a prompt
  processed from position p (the quadratic term summed over chunks is c·ISL²; the per-request a is
  not charged again: α is the step's fixed cost). A prompt's first token comes at the end of the step
  that finishes it, and it then needs OSL − 1 decode steps. The user sees each of its tokens a − α
  later (when positive): a profile measured from outside (`tokenscale profile`) has as its intercept
  a the time to first token of an empty prompt at idle, which is one step's fixed cost α plus what
  the request spends outside the steps (the API server, the network); a roofline prior has none.
  Cost: one event per step while prompts are pending on a replica; pure decode phases use the same
  step counter as disaggregated decode.

Replicas
  `set_replicas` adds replicas that become ready after `cold_start_s` ± U(−jitter, +jitter) (drawn
  from the rng; never negative) or removes some: not-yet-ready ones first (the latest to be ready
  first), then the least loaded ready ones, which drain: they take no new work and disappear when
  empty. No request is ever dropped. GPU-seconds count from the scale-up request until removal:
  cold-starting and draining replicas hold their GPUs.

Metrics (`snapshot`; the values it returns are `sim.snapshot`'s): cumulative counters and vLLM-bucket
histograms (see `sim.histogram`), gauges per pool. TPOT per request = (finish − first token) / (OSL − 1)
(undefined for OSL = 1). The ITL histogram is observed per batch segment at the segment's mean step
time, weighted by the tokens the batch generated in it (so its counts are fractional): exact under the
processor-sharing model without per-token events.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.api import ROLES_BY_MODE, Mode, Role
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.sim.histogram import (
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    BucketHistogram,
    token_buckets,
)
from tokenscale.sim.snapshot import FleetSnapshot, FloatArray, IntArray, PoolSnapshot, RequestRecords
from tokenscale.sim.workload import Workload

_STARTING, _READY, _DRAINING, _REMOVED = 0, 1, 2, 3
_EV_PREFILL_DONE, _EV_KV_DONE, _EV_DECODE, _EV_READY, _EV_STEP = 0, 1, 2, 3, 4
# Step-counter slack when comparing finish targets: float error on g ~ 1e6 is ~1e-10 steps.
_G_EPS = 1e-7


@dataclass(frozen=True)
class PoolConfig:
    """One simulated pool: its replicas' true performance, GPUs per replica, replicas at t = 0."""

    performance: ReplicaPerformance
    initial_replicas: int
    gpus_per_replica: int = 1


@dataclass(frozen=True)
class FleetConfig:
    """The simulated fleet. `pools` holds prefill + decode (Disaggregated) or aggregated."""

    mode: Mode
    pools: Mapping[Role, PoolConfig]
    cold_start_s: float = 180.0  # scale-up request → ready
    cold_start_jitter_s: float = 0.0  # ready after cold_start_s + U(−jitter, +jitter), never < 0
    prefill_batch_tokens: int = 0  # Disaggregated: 0 = one prompt per prefill batch, else a token budget
    chunk_tokens: int = 2048  # Aggregated: tokens per step, decode tokens included
    max_model_len_tokens: int = 32768  # range of the prompt/generation token-count histograms
    itl_buckets_s: tuple[float, ...] = ITL_BUCKETS_S  # the inter-token-latency histogram's bounds (vLLM's)

    def __post_init__(self) -> None:
        need = set(ROLES_BY_MODE[self.mode])
        if set(self.pools) != need:
            raise ValueError(f"{self.mode} fleet needs pools {sorted(need)}, got {sorted(self.pools)}")
        for role, pool in self.pools.items():
            if pool.initial_replicas < 0 or pool.gpus_per_replica < 1:
                raise ValueError(f"{role}: initial_replicas must be ≥ 0 and gpus_per_replica ≥ 1")
            if pool.performance.max_batch < 1 or pool.performance.kv_capacity_tokens <= 0:
                raise ValueError(f"{role}: max_batch and kv_capacity_tokens must be positive")
        if self.cold_start_s < 0 or self.cold_start_jitter_s < 0:
            raise ValueError("cold_start_s and cold_start_jitter_s must be ≥ 0")
        if self.prefill_batch_tokens < 0 or self.chunk_tokens < 1:
            raise ValueError("prefill_batch_tokens must be ≥ 0 and chunk_tokens ≥ 1")


class SimulationStuck(RuntimeError):
    """Requests remain but nothing can ever serve them (a pool with no replicas)."""


class _Replica:
    """One replica's mutable state. Decode fields serve the aggregated role too."""

    __slots__ = (
        "rid", "role", "state", "created_s", "ready_at_s", "version",
        "batch",
        "n", "g", "t_g", "ctx", "kv_used", "finishes", "firsts",
        "prefilling", "pending_tokens", "stepping", "step_plan", "step_g_end", "step_dt", "busy_since",
    )  # fmt: skip

    def __init__(self, rid: int, role: Role, created_s: float) -> None:
        self.rid = rid
        self.role: Role = role
        self.state = _STARTING
        self.created_s = created_s
        self.ready_at_s = created_s
        self.version = 0
        self.batch: list[int] = []  # prefill: requests in service
        self.n = 0  # sequences in the decode batch
        self.g = 0.0  # step counter
        self.t_g = created_s  # time at which g was last brought up to date
        self.ctx = 0.0  # Σ (context_i − g0_i): the batch's total context is ctx + n·g
        self.kv_used = 0.0  # KV tokens reserved
        self.finishes: list[tuple[float, int]] = []  # heap of (g target, request)
        self.firsts: deque[tuple[float, int]] = deque()  # (g0 + 1, request), in admission order
        self.prefilling: deque[list[int]] = deque()  # aggregated: [request, prompt tokens done]
        self.pending_tokens = 0  # aggregated: prompt tokens not yet processed
        self.stepping = False  # aggregated: in discrete-step mode (a step event is pending)
        self.step_plan: list[int] = []  # chunk per entry of `prefilling` for the current step
        self.step_g_end = 0.0  # the counter when the current step ends
        self.step_dt = 0.0
        self.busy_since = -1.0  # when it last went from no work to some work; −1 while idle


class Fleet:
    """The simulated fleet; see the module docstring for the model."""

    def __init__(self, workload: Workload, config: FleetConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.workload = workload
        self._rng = rng
        self._mode = config.mode
        self._now = 0.0
        self._heap: list[tuple[float, int, int, _Replica | None, int]] = []
        self._seq = itertools.count()
        self._rid = itertools.count()
        # Requests: plain lists in the inner loop; numpy only at the edges.
        self._arr: list[float] = workload.arrival_s.tolist()
        self._isl: list[int] = workload.isl_tokens.tolist()
        self._osl: list[int] = workload.osl_tokens.tolist()
        count = workload.n_requests
        nan = math.nan
        self._prefill_start = [nan] * count
        self._prefill_end = [nan] * count
        self._decode_start = [nan] * count
        self._first = [nan] * count
        self._finish = [nan] * count
        self._g0 = [0.0] * count
        self._next = 0  # next arrival
        self._finished = 0
        self._in_transfer = 0
        self._prompt_tokens = 0.0
        self._first_prompt_tokens = 0.0
        self._gen_tokens = 0.0
        # Queues: prefill FCFS (Disaggregated), decode admission FCFS, aggregated FCFS.
        self._pq: deque[int] = deque()
        self._dq: deque[int] = deque()
        self._aq: deque[int] = deque()
        self._idle_prefill: list[_Replica] = []
        self._live: dict[Role, list[_Replica]] = {role: [] for role in config.pools}
        self._ready: dict[Role, list[_Replica]] = {role: [] for role in config.pools}
        self._gpu_seconds_closed: dict[Role, float] = {role: 0.0 for role in config.pools}
        self._busy_seconds_closed: dict[Role, float] = {role: 0.0 for role in config.pools}
        # Performance coefficients as plain floats for the inner loop.
        if self._mode == "Disaggregated":
            pre, dec = config.pools["prefill"].performance, config.pools["decode"].performance
        else:
            pre = dec = config.pools["aggregated"].performance
        self._pa, self._pb, self._pc = pre.prefill.a_s, pre.prefill.b_s_per_token, pre.prefill.c_s_per_token2
        self._kv_s_per_token = pre.kv_transfer_s_per_token
        self._alpha, self._beta = dec.decode.alpha_s, dec.decode.beta_s
        self._gamma = dec.decode.gamma_s_per_token
        self._max_batch = dec.max_batch
        self._kv_cap = float(dec.kv_capacity_tokens)
        # Aggregated: what a request spends outside the engine's steps (module docstring).
        self._outside_s = max(self._pa - self._alpha, 0.0) if self._mode == "Aggregated" else 0.0
        # Histograms (vLLM buckets).
        self._h_ttft = BucketHistogram(TTFT_BUCKETS_S)
        self._h_itl = BucketHistogram(config.itl_buckets_s)
        self._h_tpot = BucketHistogram(ITL_BUCKETS_S)
        self._h_e2e = BucketHistogram(REQUEST_LATENCY_BUCKETS_S)
        self._h_queue = BucketHistogram(REQUEST_LATENCY_BUCKETS_S)
        self._h_prefill = BucketHistogram(REQUEST_LATENCY_BUCKETS_S)
        tokens = token_buckets(config.max_model_len_tokens)
        self._h_prompt = BucketHistogram(tokens)
        self._h_gen = BucketHistogram(tokens)
        for role, pool in config.pools.items():
            for _ in range(pool.initial_replicas):
                self._make_ready(self._new_replica(role))

    # ------------------------------------------------------------------ public API

    @property
    def now_s(self) -> float:
        return self._now

    def run_until(self, t_s: float) -> None:
        """Process every arrival and event up to and including `t_s`, then stand at `t_s`."""
        if t_s < self._now:
            raise ValueError(f"cannot run back in time: now {self._now}, asked {t_s}")
        if not math.isfinite(t_s):
            raise ValueError("run_until needs a finite time; use run_to_completion")
        self._process(t_s)
        self._now = t_s
        self._catch_up(t_s)

    def run_to_completion(self) -> float:
        """Run until every request of the workload has finished; return the time then (≥ the last event).

        Raises `SimulationStuck` if requests remain that no replica can ever serve.
        """
        self._process(math.inf)
        if self._finished < len(self._arr):
            raise SimulationStuck(
                f"{len(self._arr) - self._finished} requests can never finish: "
                + ", ".join(f"{role} has {len(self._live[role])} replicas" for role in self._live)
            )
        self._catch_up(self._now)
        return self._now

    def append_arrivals(self, arrival_s: npt.ArrayLike, isl_tokens: npt.ArrayLike, osl_tokens: npt.ArrayLike) -> None:
        """Add requests after the workload's: sorted arrivals no earlier than now and the last arrival.

        For an open-ended run whose arrivals are drawn as time goes on (`sim.exporter.LiveFleet`).
        They join `records()` after the workload's requests, in arrival order.
        """
        t = np.asarray(arrival_s, dtype=np.float64)
        isl = np.asarray(isl_tokens, dtype=np.int64)
        osl = np.asarray(osl_tokens, dtype=np.int64)
        if t.ndim != 1 or isl.shape != t.shape or osl.shape != t.shape:
            raise ValueError("arrival_s, isl_tokens and osl_tokens must be 1-D and of the same length")
        if not len(t):
            return
        earliest = max(self._now, self._arr[-1] if self._arr else 0.0)
        if not np.all(np.isfinite(t)) or t[0] < earliest or np.any(np.diff(t) < 0.0):
            raise ValueError(f"arrivals must be finite, sorted and ≥ {earliest} (now or the last arrival)")
        if isl.min() < 1 or osl.min() < 1:
            raise ValueError("token lengths must be ≥ 1")
        self._arr.extend(t.tolist())
        self._isl.extend(isl.tolist())
        self._osl.extend(osl.tolist())
        nan = [math.nan] * len(t)
        for times in (self._prefill_start, self._prefill_end, self._decode_start, self._first, self._finish):
            times.extend(nan)
        self._g0.extend([0.0] * len(t))

    def set_replicas(self, role: Role, n: int, now_s: float) -> None:
        """Scale `role` to `n` replicas (starting + ready) at `now_s` (≥ the current time)."""
        if role not in self._live:
            raise ValueError(f"no {role} pool in a {self._mode} fleet")
        if n < 0:
            raise ValueError(f"replica count must be ≥ 0, got {n}")
        self.run_until(now_s)
        live = [r for r in self._live[role] if r.state in (_STARTING, _READY)]
        if n > len(live):
            base = self.config.cold_start_s
            jitter = self.config.cold_start_jitter_s
            for _ in range(n - len(live)):
                r = self._new_replica(role)
                delay = base + (float(self._rng.uniform(-jitter, jitter)) if jitter > 0 else 0.0)
                if delay <= 0.0:
                    self._make_ready(r)
                else:
                    r.ready_at_s = self._now + delay
                    self._push(r.ready_at_s, _EV_READY, r, r.version)
            return
        excess = len(live) - n
        starting = sorted((r for r in live if r.state == _STARTING), key=lambda r: -r.ready_at_s)
        ready = sorted((r for r in live if r.state == _READY), key=lambda r: (self._load(r), -r.rid))
        for r in (starting + ready)[:excess]:
            if r.state == _STARTING:
                self._remove(r)
            else:
                self._drain(r)

    def snapshot(self, now_s: float) -> FleetSnapshot:
        """Run to `now_s` and return the cumulative metrics and current gauges."""
        self.run_until(now_s)
        pools: dict[Role, PoolSnapshot] = {}
        for role, live in self._live.items():
            gpus_per = self.config.pools[role].gpus_per_replica
            counts = [0, 0, 0, 0]
            running = 0
            held = 0.0
            holding = 0
            for r in live:
                counts[r.state] += 1
                if r.state != _STARTING:
                    holding += 1
                    if role == "prefill":
                        running += len(r.batch)
                        held += sum(self._isl[j] for j in r.batch)
                    else:
                        running += r.n + len(r.prefilling)
                        held += r.kv_used
            cap = self.config.pools[role].performance.kv_capacity_tokens * holding
            queue = self._pq if role == "prefill" else self._dq if role == "decode" else self._aq
            waiting = len(queue)
            open_s = sum(self._now - r.created_s for r in live) * gpus_per
            busy_s = sum(self._now - r.busy_since for r in live if r.busy_since >= 0.0)
            pools[role] = PoolSnapshot(
                replicas_current=counts[_STARTING] + counts[_READY],
                replicas_ready=counts[_READY],
                replicas_starting=counts[_STARTING],
                replicas_draining=counts[_DRAINING],
                running_requests=running,
                waiting_requests=waiting,
                kv_usage_fraction=held / cap if cap > 0 else 0.0,
                held_tokens=float(held),
                waiting_prompt_tokens=float(sum(self._isl[j] for j in queue)),
                gpus=len(live) * gpus_per,
                gpu_seconds_total=self._gpu_seconds_closed[role] + open_s,
                busy_replica_seconds_total=self._busy_seconds_closed[role] + busy_s,
            )
        return FleetSnapshot(
            time_s=self._now,
            arrivals_total=self._next,
            finished_total=self._finished,
            kv_transfers_in_flight=self._in_transfer,
            prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=self._gen_tokens,
            ttft_s=self._h_ttft.snapshot(),
            itl_s=self._h_itl.snapshot(),
            tpot_s=self._h_tpot.snapshot(),
            e2e_s=self._h_e2e.snapshot(),
            queue_time_s=self._h_queue.snapshot(),
            prefill_time_s=self._h_prefill.snapshot(),
            prompt_tokens=self._h_prompt.snapshot(),
            generation_tokens=self._h_gen.snapshot(),
            pools=pools,
            first_token_prompt_tokens_total=self._first_prompt_tokens,
        )

    def records(self) -> RequestRecords:
        """Per-request times so far (call after `run_to_completion` for a full run)."""
        w = self.workload

        def arr(values: list[float]) -> FloatArray:
            out = np.array(values, dtype=np.float64)
            out.setflags(write=False)
            return out

        def ints(values: list[int]) -> IntArray:
            out = np.array(values, dtype=np.int64)
            out.setflags(write=False)
            return out

        appended = len(self._arr) > w.n_requests
        return RequestRecords(
            arrival_s=arr(self._arr) if appended else w.arrival_s,
            isl_tokens=ints(self._isl) if appended else w.isl_tokens,
            osl_tokens=ints(self._osl) if appended else w.osl_tokens,
            prefill_start_s=arr(self._prefill_start),
            prefill_end_s=arr(self._prefill_end),
            decode_start_s=arr(self._decode_start),
            first_token_s=arr(self._first),
            finish_s=arr(self._finish),
        )

    # ------------------------------------------------------------------ event loop

    def _push(self, t: float, kind: int, r: _Replica | None, tag: int) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, r, tag))

    def _process(self, t_end: float) -> None:
        heap = self._heap
        arr = self._arr
        total = len(arr)
        disaggregated = self._mode == "Disaggregated"
        heappop = heapq.heappop
        while True:
            next_arrival = arr[self._next] if self._next < total else math.inf
            next_event = heap[0][0] if heap else math.inf
            if next_arrival < next_event:
                if next_arrival > t_end:
                    return
                self._now = next_arrival
                j = self._next
                self._next = j + 1
                if disaggregated:
                    self._pq.append(j)
                    if self._idle_prefill:
                        self._dispatch_prefill()
                else:
                    self._aq.append(j)
                    self._admit_aggregated(None)
                continue
            if next_event > t_end or next_event == math.inf:
                return
            t, _, kind, r, tag = heappop(heap)
            self._now = t
            if kind == _EV_KV_DONE:
                self._in_transfer -= 1
                self._dq.append(tag)
                self._admit_decode(None)
                continue
            assert r is not None
            if kind == _EV_DECODE or kind == _EV_STEP:
                if tag == r.version and r.state != _REMOVED:
                    if kind == _EV_DECODE:
                        self._on_decode_finish(r)
                    else:
                        self._on_step_end(r)
            elif kind == _EV_PREFILL_DONE:
                self._on_prefill_done(r)
            elif kind == _EV_READY:
                if r.state == _STARTING:
                    self._make_ready(r)

    def _catch_up(self, t: float) -> None:
        """Bring every continuously-decoding replica's counter to `t` (first tokens, token counters)."""
        for role, live in self._live.items():
            if role == "prefill":
                continue
            for r in live:
                if not r.stepping and r.state != _STARTING:
                    self._advance(r, t)

    # ------------------------------------------------------------------ replicas

    def _new_replica(self, role: Role) -> _Replica:
        r = _Replica(next(self._rid), role, self._now)
        self._live[role].append(r)
        return r

    def _make_ready(self, r: _Replica) -> None:
        r.state = _READY
        r.ready_at_s = self._now
        r.t_g = self._now
        self._ready[r.role].append(r)
        if r.role == "prefill":
            self._idle_prefill.append(r)
            self._dispatch_prefill()
        elif r.role == "decode":
            self._admit_decode(None)
        else:
            self._admit_aggregated(None)

    def _load(self, r: _Replica) -> int:
        return len(r.batch) if r.role == "prefill" else r.n + len(r.prefilling)

    def _drain(self, r: _Replica) -> None:
        r.state = _DRAINING
        self._ready[r.role].remove(r)
        if r.role == "prefill":
            if r in self._idle_prefill:
                self._idle_prefill.remove(r)
        if self._load(r) == 0:
            self._remove(r)

    def _mark_idle(self, r: _Replica) -> None:
        if r.busy_since >= 0.0:
            self._busy_seconds_closed[r.role] += self._now - r.busy_since
            r.busy_since = -1.0

    def _remove(self, r: _Replica) -> None:
        if r.state == _READY:
            self._ready[r.role].remove(r)
        r.state = _REMOVED
        r.version += 1
        self._live[r.role].remove(r)
        gpus = self.config.pools[r.role].gpus_per_replica
        self._gpu_seconds_closed[r.role] += (self._now - r.created_s) * gpus

    # ------------------------------------------------------------------ prefill (Disaggregated)

    def _dispatch_prefill(self) -> None:
        pq, idle, isl = self._pq, self._idle_prefill, self._isl
        a, b, c = self._pa, self._pb, self._pc
        budget = self.config.prefill_batch_tokens
        now = self._now
        while pq and idle:
            r = idle.pop()
            j = pq.popleft()
            x = isl[j]
            batch = [j]
            tokens = x
            service = a + b * x + c * x * x
            while budget and pq and tokens + isl[pq[0]] <= budget:
                k = pq.popleft()
                x = isl[k]
                batch.append(k)
                tokens += x
                service += b * x + c * x * x
            for k in batch:
                self._prefill_start[k] = now
                self._h_queue.observe(now - self._arr[k])
            r.batch = batch
            r.busy_since = now
            self._push(now + service, _EV_PREFILL_DONE, r, 0)

    def _on_prefill_done(self, r: _Replica) -> None:
        now = self._now
        isl = self._isl
        per_token = self._kv_s_per_token
        for j in r.batch:
            self._prefill_end[j] = now
            self._prompt_tokens += isl[j]
            self._h_prefill.observe(now - self._prefill_start[j])
            if per_token > 0.0:
                self._in_transfer += 1
                self._push(now + per_token * isl[j], _EV_KV_DONE, None, j)
            else:
                self._dq.append(j)
        r.batch = []
        self._mark_idle(r)
        if r.state == _DRAINING:
            self._remove(r)
        else:
            self._idle_prefill.append(r)
            self._dispatch_prefill()
        if self._dq:
            self._admit_decode(None)

    # ------------------------------------------------------------------ decode batches (counter trick)

    def _advance(self, r: _Replica, t: float) -> None:
        """Move r's step counter from r.t_g to t at the current batch (exact for τ linear in g)."""
        dt = t - r.t_g
        if dt <= 0.0:
            return
        n = r.n
        if n:
            bslope = self._gamma * n
            tau0 = self._alpha + self._beta * n + self._gamma * r.ctx + bslope * r.g
            if bslope > 0.0:
                dg = 2.0 * dt / (tau0 + math.sqrt(tau0 * tau0 + 2.0 * bslope * dt))
            else:
                dg = dt / tau0
            tokens = n * dg
            self._gen_tokens += tokens
            self._h_itl.observe(dt / dg, tokens)
            g_old = r.g
            g_new = g_old + dg
            firsts = r.firsts
            while firsts and firsts[0][0] <= g_new:
                target, j = firsts.popleft()
                x = target - g_old
                if x < 0.0:
                    x = 0.0
                self._record_first(j, r.t_g + x * (tau0 + 0.5 * bslope * x))
            r.g = g_new
        r.t_g = t

    def _schedule_decode(self, r: _Replica) -> None:
        r.version += 1
        if not r.finishes:
            if r.state == _DRAINING and not r.prefilling:
                self._remove(r)
            return
        x = r.finishes[0][0] - r.g
        if x < 0.0:
            x = 0.0
        n = r.n
        bslope = self._gamma * n
        tau0 = self._alpha + self._beta * n + self._gamma * r.ctx + bslope * r.g
        self._push(r.t_g + x * (tau0 + 0.5 * bslope * x), _EV_DECODE, r, r.version)

    def _release_finished(self, r: _Replica) -> None:
        """Finish every sequence whose target the counter has reached."""
        now = self._now
        finishes = r.finishes
        limit = r.g + _G_EPS
        isl, osl = self._isl, self._osl
        while finishes and finishes[0][0] <= limit:
            _, j = heapq.heappop(finishes)
            r.n -= 1
            r.ctx -= self._ctx_of(j)
            r.kv_used -= isl[j] + osl[j]
            self._record_finish(j, now)
        if r.n == 0:
            r.ctx = 0.0  # no drift across idle periods
            if not r.prefilling:
                self._mark_idle(r)

    def _ctx_of(self, j: int) -> float:
        # Context at g0: the prompt (plus the first token, in aggregated mode) minus g0.
        extra = 1 if self._mode == "Aggregated" else 0
        return self._isl[j] + extra - self._g0[j]

    def _on_decode_finish(self, r: _Replica) -> None:
        self._advance(r, self._now)
        target = r.finishes[0][0]
        if r.g < target:
            r.g = target  # float residue: the event was computed to land exactly here
        firsts = r.firsts
        while firsts and firsts[0][0] <= r.g + _G_EPS:
            self._record_first(firsts.popleft()[1], self._now)
        self._release_finished(r)
        if self._mode == "Disaggregated":
            self._admit_decode(r)
        else:
            self._admit_aggregated(r)

    def _admit_decode(self, extra: _Replica | None) -> None:
        """Admit waiting requests FCFS to the least-busy ready decode replica with room."""
        dq = self._dq
        ready = self._ready["decode"]
        touched: list[_Replica] = [] if extra is None else [extra]
        isl, osl = self._isl, self._osl
        max_batch, cap = self._max_batch, self._kv_cap
        now = self._now
        while dq:
            j = dq[0]
            need = isl[j] + osl[j]
            best: _Replica | None = None
            best_n = max_batch
            for r in ready:
                if r.n < best_n and (r.kv_used + need <= cap or r.n == 0):
                    best, best_n = r, r.n
            if best is None:
                break
            dq.popleft()
            if best.t_g != now:
                self._advance(best, now)
            g0 = best.g
            self._g0[j] = g0
            if best.busy_since < 0.0:
                best.busy_since = now
            best.n += 1
            best.ctx += isl[j] - g0
            best.kv_used += need
            heapq.heappush(best.finishes, (g0 + osl[j], j))
            best.firsts.append((g0 + 1.0, j))
            self._decode_start[j] = now
            if best not in touched:
                touched.append(best)
        for r in touched:
            self._schedule_decode(r)

    # ------------------------------------------------------------------ aggregated (chunked prefill)

    def _admit_aggregated(self, extra: _Replica | None) -> None:
        """Admit waiting requests FCFS to the least-loaded ready replica with room; start steps."""
        aq = self._aq
        ready = self._ready["aggregated"]
        touched: list[_Replica] = [] if extra is None else [extra]
        isl, osl = self._isl, self._osl
        max_batch, cap, budget = self._max_batch, self._kv_cap, self.config.chunk_tokens
        now = self._now
        while aq:
            j = aq[0]
            need = isl[j] + osl[j]
            best: _Replica | None = None
            best_load = max_batch
            for r in ready:
                load = r.n + len(r.prefilling)
                if load < best_load and r.pending_tokens < budget - r.n and (r.kv_used + need <= cap or load == 0):
                    best, best_load = r, load
            if best is None:
                break
            aq.popleft()
            if best.busy_since < 0.0:
                best.busy_since = now
            best.prefilling.append([j, 0])
            best.pending_tokens += isl[j]
            best.kv_used += need
            self._prefill_start[j] = now
            self._h_queue.observe(now - self._arr[j])
            if best not in touched:
                touched.append(best)
        for r in touched:
            if r.stepping:
                continue  # the step in flight picks the new prompts up when it ends
            if r.prefilling and budget > r.n:
                if r.t_g != now:
                    self._advance(r, now)
                    self._release_finished(r)  # a finish due at this very instant
                self._start_step(r)
            else:
                self._schedule_decode(r)

    def _start_step(self, r: _Replica) -> None:
        """Plan one step: the decode batch plus FCFS prompt chunks filling the token budget.

        A decode step in flight cannot be interrupted: if the counter is mid-step, first run a
        lead-in to the next whole step (pure decode), then the chunked steps.
        """
        n = r.n
        whole = math.ceil(r.g - 1e-6)
        if n == 0 or whole - r.g <= 1e-6:
            r.g = float(whole)
        else:
            x = whole - r.g
            bslope = self._gamma * n
            tau0 = self._alpha + self._beta * n + self._gamma * r.ctx + bslope * r.g
            self._push_step(r, [], float(whole), x * (tau0 + 0.5 * bslope * x))
            return
        isl = self._isl
        b, c = self._pb, self._pc
        room = self.config.chunk_tokens - n
        plan: list[int] = []
        prefill_s = 0.0
        for j, done in r.prefilling:
            chunk = min(isl[j] - done, room)
            end = done + chunk
            prefill_s += b * chunk + c * (end * end - done * done)
            plan.append(chunk)
            room -= chunk
            if room <= 0:
                break
        tau = self._alpha + self._beta * n + self._gamma * (r.ctx + n * r.g)
        self._push_step(r, plan, r.g + 1.0, tau + prefill_s)

    def _push_step(self, r: _Replica, plan: list[int], g_end: float, dt: float) -> None:
        r.stepping = True
        r.step_plan = plan
        r.step_g_end = g_end
        r.step_dt = dt
        r.version += 1
        self._push(self._now + dt, _EV_STEP, r, r.version)

    def _on_step_end(self, r: _Replica) -> None:
        now = self._now
        steps = r.step_g_end - r.g
        r.g = r.step_g_end
        if r.n:
            tokens = r.n * steps
            self._gen_tokens += tokens
            self._h_itl.observe(r.step_dt / steps, tokens)
            self._release_finished(r)
        isl, osl = self._isl, self._osl
        prefilling = r.prefilling
        for k, chunk in enumerate(r.step_plan):
            prefilling[k][1] += chunk
        r.pending_tokens -= sum(r.step_plan)
        self._prompt_tokens += sum(r.step_plan)
        r.step_plan = []
        while prefilling and prefilling[0][1] >= isl[prefilling[0][0]]:
            j = prefilling.popleft()[0]
            self._prefill_end[j] = now
            self._h_prefill.observe(now - self._prefill_start[j])
            self._record_first(j, now)
            self._gen_tokens += 1
            if osl[j] == 1:
                r.kv_used -= isl[j] + osl[j]
                self._record_finish(j, now)
                continue
            g0 = r.g
            self._g0[j] = g0
            r.n += 1
            r.ctx += isl[j] + 1 - g0
            heapq.heappush(r.finishes, (g0 + osl[j] - 1, j))
            self._decode_start[j] = now
        r.t_g = now
        r.stepping = False
        if r.n == 0 and not prefilling:
            self._mark_idle(r)
        self._admit_aggregated(r)  # starts the next step, or goes back to continuous decode (or is removed)

    # ------------------------------------------------------------------ request records

    def _record_first(self, j: int, t: float) -> None:
        t += self._outside_s
        self._first[j] = t
        self._first_prompt_tokens += self._isl[j]
        self._h_ttft.observe(t - self._arr[j])

    def _record_finish(self, j: int, t: float) -> None:
        t += self._outside_s
        self._finish[j] = t
        self._finished += 1
        self._h_e2e.observe(t - self._arr[j])
        osl = self._osl[j]
        if osl > 1:
            self._h_tpot.observe((t - self._first[j]) / (osl - 1))
        self._h_prompt.observe(self._isl[j])
        self._h_gen.observe(osl)
