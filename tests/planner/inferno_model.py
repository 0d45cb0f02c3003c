"""The state-dependent queue of IBM's llm-inferno queue analyzer, rebuilt as a cross-check.

Used by tests/planner/test_queueing.py only. Source of the model and of the numbers it must
reproduce: the README of github.com/llm-inferno/queue-analysis (the `/solve` example) and the
description of its analyzer (pkg/analyzer/README.md). This is our own code, derived from that
description; times in milliseconds and rates per millisecond inside, as in the original.

The server is a birth–death chain on n = requests present (in service or queued):
- An iteration over a batch of n requests takes T(n) = α + n·(β·t_c + γ·t_m) ms, where
  t_c = (ISL + OSL)/(OSL + 1) is the tokens a request computes per iteration (its prompt spread
  over its OSL + 1 iterations) and t_m = ISL + OSL/2 its mean context, read from memory.
- A request's prefill at batch n takes T(n) + (β + γ)·ISL, each of its OSL decode steps
  T(n) + β + γ·t_m; so n requests in service leave at rate μ(n) = n/(prefill(n) + OSL·decode(n)).
- At most N (max batch) are served; beyond N the rate stays μ(N). The system holds at most
  K = N + queue limit requests; arrivals (Poisson, rate λ) that find it full are lost.
Stationary p(n) ∝ Π_{k<n} λ/μ(k+1) (computed in log space). Then throughput X = λ(1 − p(K)),
mean in service n̄_s = Σ min(n, N)·p(n), response R = L/X and service S = n̄_s/X (Little),
wait W = R − S, prefill time at the mean batch P = prefill(n̄_s), ITL = (S − P)/OSL and
TTFT = W + P + ITL. The largest stable rate it reports is μ(N)·(1 − 0.001): the analyzer keeps a
0.1% margin below saturation, and the README's 3.8208 req/s includes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The analyzer's margin below the saturation rate (its `Epsilon`).
SATURATION_MARGIN = 0.001


@dataclass(frozen=True)
class InfernoServer:
    """Iteration-time coefficients (ms, ms per token, ms per token²) and the queue limits."""

    alpha_ms: float
    beta_ms: float
    gamma_ms: float
    max_batch: int
    max_queue: int


@dataclass(frozen=True)
class InfernoResult:
    """The analyzer's outputs (README `/solve`), plus the state distribution for comparisons."""

    throughput_per_s: float
    mean_response_ms: float
    mean_wait_ms: float
    mean_in_service: float
    ttft_ms: float
    itl_ms: float
    max_rate_per_s: float
    state_probabilities: FloatArray

    def in_service_probabilities(self, max_batch: int) -> FloatArray:
        """P(min(n, N) = k) for k = 0..N: the distribution of the running batch."""
        p = self.state_probabilities
        out = np.zeros(max_batch + 1)
        out[: min(p.size, max_batch + 1)] = p[: max_batch + 1]
        out[max_batch] += p[max_batch + 1 :].sum()
        return out


def iteration_ms(server: InfernoServer, isl: float, osl: float, batch: FloatArray | float) -> FloatArray | float:
    tokens_compute = (isl + osl) / (osl + 1.0)
    tokens_memory = isl + osl / 2.0
    return server.alpha_ms + batch * (server.beta_ms * tokens_compute + server.gamma_ms * tokens_memory)


def prefill_ms(server: InfernoServer, isl: float, osl: float, batch: FloatArray | float) -> FloatArray | float:
    return iteration_ms(server, isl, osl, batch) + (server.beta_ms + server.gamma_ms) * isl


def decode_ms(server: InfernoServer, isl: float, osl: float, batch: FloatArray | float) -> FloatArray | float:
    return iteration_ms(server, isl, osl, batch) + server.beta_ms + server.gamma_ms * (isl + osl / 2.0)


def service_ms(server: InfernoServer, isl: float, osl: float, batch: FloatArray | float) -> FloatArray | float:
    """Time a request spends in service when the batch holds `batch` requests: prefill + OSL decodes."""
    return prefill_ms(server, isl, osl, batch) + osl * decode_ms(server, isl, osl, batch)


def solve(server: InfernoServer, rate_per_s: float, isl: float, osl: float) -> InfernoResult:
    """Stationary analysis of the chain at arrival rate `rate_per_s` (see the module docstring)."""
    lam = rate_per_s / 1000.0  # per ms
    batch = np.arange(1, server.max_batch + 1, dtype=np.float64)
    mu = batch / np.asarray(service_ms(server, isl, osl, batch), dtype=np.float64)
    capacity = server.max_batch + server.max_queue
    n = np.arange(1, capacity + 1)
    mu_n = mu[np.minimum(n, server.max_batch) - 1]
    log_p = np.concatenate(([0.0], np.cumsum(np.log(lam / mu_n))))
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    states = np.arange(capacity + 1, dtype=np.float64)
    in_service = float(np.dot(np.minimum(states, server.max_batch), p))
    in_system = float(np.dot(states, p))
    throughput = lam * (1.0 - p[-1])
    response = in_system / throughput
    service = in_service / throughput
    wait = max(response - service, 0.0)
    prefill = float(prefill_ms(server, isl, osl, in_service))
    itl = (service - prefill) / osl
    return InfernoResult(
        throughput_per_s=throughput * 1000.0,
        mean_response_ms=response,
        mean_wait_ms=wait,
        mean_in_service=in_service,
        ttft_ms=wait + prefill + itl,
        itl_ms=itl,
        max_rate_per_s=float(mu[-1]) * (1.0 - SATURATION_MARGIN) * 1000.0,
        state_probabilities=p,
    )


def little_mean_batch(server: InfernoServer, rate_per_s: float, isl: float, osl: float) -> float:
    """n̄ solving Little's law n̄ = λ·service(n̄) (no batch or queue limit); service is affine in n."""
    lam = rate_per_s / 1000.0
    r0 = float(service_ms(server, isl, osl, 0.0))
    r1 = float(service_ms(server, isl, osl, 1.0)) - r0
    if lam * r1 >= 1.0:
        return math.inf
    return lam * r0 / (1.0 - lam * r1)
