"""What a simulated fleet exports: the engines' gauges and counters at an instant, and per-request times.

`sim.fleet.Fleet.snapshot(t)` returns a `FleetSnapshot` (one `PoolSnapshot` per pool) and
`Fleet.records()` the `RequestRecords` at the end of a run. Read by the simulator's control loop
(`sim.loop`, which differences two snapshots into an observation), the policies (`sim.policies`
read the pools' gauges), the engine-metrics exporter (`sim.engine_metrics`, `sim.exporter`) and the
ground truth the report is judged by (`sim.truth`). Plain frozen values: no simulation here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.api import Role
from tokenscale.sim.histogram import HistogramSnapshot

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PoolSnapshot:
    """Gauges and totals of one pool at one instant."""

    replicas_current: int  # starting + ready: what /scale reports as spec.replicas
    replicas_ready: int
    replicas_starting: int
    replicas_draining: int  # terminating, still finishing their requests
    running_requests: int
    waiting_requests: int
    kv_usage_fraction: float  # KV tokens held / capacity, over ready and draining replicas (0 if none)
    held_tokens: float  # prefill: prompt tokens being prefilled; decode/aggregated: KV tokens held
    waiting_prompt_tokens: float  # Σ ISL of the requests queued for this pool
    gpus: int  # provisioned now: (current + draining) × gpus_per_replica
    gpu_seconds_total: float
    busy_replica_seconds_total: float  # Σ over replicas of time with work (a batch, a sequence, a prompt)


@dataclass(frozen=True, eq=False)
class FleetSnapshot:
    """What the engines would export at `time_s`: cumulative counters and histograms, gauges.

    Difference two snapshots (counters, `HistogramSnapshot.minus`) for one metrics window.
    """

    time_s: float
    arrivals_total: int
    finished_total: int
    kv_transfers_in_flight: int
    prompt_tokens_total: float
    generation_tokens_total: float
    ttft_s: HistogramSnapshot
    itl_s: HistogramSnapshot
    tpot_s: HistogramSnapshot
    e2e_s: HistogramSnapshot
    queue_time_s: HistogramSnapshot
    prefill_time_s: HistogramSnapshot
    prompt_tokens: HistogramSnapshot
    generation_tokens: HistogramSnapshot
    pools: Mapping[Role, PoolSnapshot]
    # Σ ISL over requests that have their first token: vLLM counts prompt tokens at the first token.
    first_token_prompt_tokens_total: float = 0.0

    @property
    def in_system(self) -> int:
        """Requests that have arrived and not finished."""
        return self.arrivals_total - self.finished_total


@dataclass(frozen=True, eq=False)
class RequestRecords:
    """Per-request times in seconds (NaN where it has not happened yet), in workload order.

    `prefill_start_s`: prefill service starts (Aggregated: admission to a replica);
    `prefill_end_s`: prompt done (Disaggregated: before the KV transfer); `decode_start_s`: admitted
    to a decode batch (Aggregated: joined the batch after its first token).
    """

    arrival_s: FloatArray
    isl_tokens: IntArray
    osl_tokens: IntArray
    prefill_start_s: FloatArray
    prefill_end_s: FloatArray
    decode_start_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray

    @property
    def ttft_s(self) -> FloatArray:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> FloatArray:
        """(finish − first token)/(OSL − 1); NaN for OSL = 1 and for unfinished requests."""
        steps = (self.osl_tokens - 1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = np.where(steps > 0, (self.finish_s - self.first_token_s) / steps, np.nan)
        return out

    @property
    def e2e_s(self) -> FloatArray:
        return self.finish_s - self.arrival_s
