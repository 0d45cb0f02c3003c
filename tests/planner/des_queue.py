"""Brute-force simulations that the planner's closed forms are checked against (test-only).

Used by tests/planner/test_sizing_vs_des.py. Nothing here knows Erlang C, Kingman or Poisson
batches: customers arrive, wait their turn, are served, and the tests read empirical quantiles.

- `fcfs_sojourn_s`: a FCFS queue with c identical servers, empty at time 0. One server uses
  Lindley's recursion W_n = max(0, W_{n−1} + S_{n−1} − A_n) in its vectorized form
  W_n = X_n − min(0, min_{j≤n} X_j), X_n = Σ_{i≤n} (S_{i−1} − A_i) (Lindley 1952). Several
  servers keep the times at which each server frees up in a heap (the Kiefer–Wolfowitz workload
  vector, 1955): a customer starts at max(arrival, earliest free time). O(n log c).
- `interarrival_times_s`: Poisson arrivals (c_a² = 1) or a gamma renewal process with shape
  1/c_a² (c_a² > 1 bursty, < 1 smoother than Poisson).
- `simulate_decode_steps`: continuous batching step by step. Each engine step serves every
  running request one token and takes τ(n) for a batch of n; requests that arrived during a
  step join at the next one; each request leaves after its own number of output tokens.

Times in seconds, rates per second. Randomness only from the numpy `Generator` passed in.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Draws `count` service times (seconds) with the generator it is given.
ServiceSampler = Callable[[np.random.Generator, int], FloatArray]


def interarrival_times_s(rng: np.random.Generator, rate_per_s: float, ca2: float, count: int) -> FloatArray:
    """`count` inter-arrival times with mean 1/rate and squared coefficient of variation `ca2`.

    ca2 = 1: exponential (Poisson arrivals); otherwise gamma with shape 1/ca2 and scale ca2/rate
    (variance shape·scale² = ca2/rate², i.e. c_a² = ca2).
    """
    if rate_per_s <= 0 or ca2 <= 0:
        raise ValueError("rate_per_s and ca2 must be > 0")
    mean_s = 1.0 / rate_per_s
    if math.isclose(ca2, 1.0):
        out: FloatArray = rng.exponential(mean_s, count)
        return out
    out = rng.gamma(1.0 / ca2, mean_s * ca2, count)
    return out


def fcfs_sojourn_s(interarrival_s: FloatArray, service_s: FloatArray, servers: int) -> FloatArray:
    """Sojourn time (wait + service) of each customer of a FCFS queue with `servers` servers, empty at 0."""
    if servers < 1:
        raise ValueError("servers must be ≥ 1")
    if interarrival_s.shape != service_s.shape:
        raise ValueError("one service time per arrival")
    if servers == 1:
        increments = np.empty_like(interarrival_s)
        increments[0] = 0.0
        increments[1:] = service_s[:-1] - interarrival_s[1:]
        x = np.cumsum(increments)
        wait = x - np.minimum.accumulate(np.minimum(x, 0.0))
        out: FloatArray = wait + service_s
        return out
    arrivals = np.cumsum(interarrival_s).tolist()
    free_at = [0.0] * servers  # a heap: free_at[0] is the server that frees up first
    sojourn: list[float] = []
    record = sojourn.append
    for arrival, service in zip(arrivals, service_s.tolist(), strict=True):
        first_free = free_at[0]
        done = (arrival if arrival > first_free else first_free) + service
        heapq.heapreplace(free_at, done)
        record(done - arrival)
    return np.array(sojourn)


def simulate_sojourn_s(
    rng: np.random.Generator,
    servers: int,
    rate_per_s: float,
    ca2: float,
    service: ServiceSampler,
    count: int,
    warmup_fraction: float = 0.1,
) -> FloatArray:
    """Sojourn times of `count` customers of a GI/G/c FCFS queue, the first `warmup_fraction` dropped."""
    gaps = interarrival_times_s(rng, rate_per_s, ca2, count)
    services = np.asarray(service(rng, count), dtype=np.float64)
    sojourn = fcfs_sojourn_s(gaps, services, servers)
    out: FloatArray = sojourn[int(count * warmup_fraction) :]
    return out


@dataclass(frozen=True)
class DecodeTrace:
    """Per engine step: the batch it ran and how long it took (seconds)."""

    batch: IntArray
    step_s: FloatArray

    def token_weighted_quantile(self, quantile: float) -> tuple[int, float]:
        """(batch, step time) at the q-quantile over tokens: a step of batch n emits n tokens, each
        of which records that step as its inter-token latency (one histogram sample per token)."""
        order = np.argsort(self.step_s, kind="stable")
        tokens = np.cumsum(self.batch[order])
        at = int(np.searchsorted(tokens, quantile * tokens[-1]))
        return int(self.batch[order][at]), float(self.step_s[order][at])


def simulate_decode_steps(
    rng: np.random.Generator,
    rate_per_s: float,
    osl_mean_tokens: float,
    step_time_s: Callable[[int], float],
    steps: int,
    warmup_steps: int,
) -> DecodeTrace:
    """Continuous batching with Poisson arrivals and geometric output lengths (mean `osl_mean_tokens`).

    A step with n ≥ 1 running requests takes step_time_s(n); Poisson(λ·duration) requests arrive
    during it and join the next step; after the step each running request has emitted a token
    and finishes with probability 1/OSL (a geometric length, memoryless, so only the count of
    running requests is state). An idle engine waits for the next arrival. No batch limit.
    """
    finish_p = 1.0 / osl_mean_tokens
    batch = np.empty(steps, dtype=np.int64)
    step_s = np.empty(steps, dtype=np.float64)
    running = 0
    for i in range(steps + warmup_steps):
        if running == 0:
            running = 1  # idle until an arrival; that arrival starts the next step alone
        duration = step_time_s(running)
        if i >= warmup_steps:
            batch[i - warmup_steps] = running
            step_s[i - warmup_steps] = duration
        running -= int(rng.binomial(running, finish_p))
        running += int(rng.poisson(rate_per_s * duration))
    return DecodeTrace(batch=batch, step_s=step_s)
