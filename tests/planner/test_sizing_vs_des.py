"""The planner's queueing and sizing predictions against brute-force simulation (tests/planner/des_queue.py).

Prefill side: `queueing.sojourn_quantile_s` (Erlang C with the Allen–Cunneen / Kingman tail, plus
the service-time distribution added after the wait) against a FCFS GI/G/c simulation, on the grid
c ∈ {1, 2, 4, 8, 16} × ρ ∈ {0.3, 0.6, 0.85} × c_a² ∈ {1, 2.5} (Poisson; gamma-renewal arrivals) ×
service ∈ {deterministic, exponential, lognormal ISL through s(ISL)}, at p50/p90/p99. Each cell
simulates ≥ 100k customers after a 10% warm-up (600k at ρ = 0.85, where the sojourn times are
strongly correlated; 1M with one server). The model gets the service distribution as points: the value itself for
constant service, 400 equal-probability points (midpoint quantiles) for the others, with the exact
E[S] and c_s². Then the planner's own path, `sizing.prefill_sizing` (which discretizes the ISL
with `sizing.lognormal_points`), against the same simulations.

Decode side: `sizing.decode_sizing`'s ITL quantile τ(1 + P_q(n̄)) against an independent
evaluation of the same formula, and against a step-by-step simulation of continuous batching.

Measured relative error (model − sim)/sim over all cells of a regime and five seeds (this file
runs one); the tolerances below are these plus about a fifth:
- c_a² = 1, every service and load: p50 in [−11.0%, +7.4%] (worst: M/D/1 at ρ = 0.6), p90 in
  [−5.5%, +5.8%], p99 in [−16.0%, +18.9%] (over: M/D/1 at ρ = 0.3, the exponential tail is
  conservative; under: lognormal service, c = 1, ρ = 0.6, the real tail is heavier).
- c_a² = 2.5 at ρ = 0.85: p50 in [−22.2%, 0], p90 in [−10.6%, +1.9%], p99 in [−9.7%, +7.5%].
- c_a² = 2.5 at ρ ≤ 0.6, exponential or lognormal service: p50 in [−28.0%, +1.3%], p90 in
  [−14.1%, +1.9%], p99 in [−9.7%, +6.6%] (worst: one server at ρ = 0.3).
- c_a² = 2.5 at ρ ≤ 0.6, constant service: far off. p50 down to −38.4% (c = 2, ρ = 0.6), p90
  −35.3% (c = 2, ρ = 0.3), p99 −33.8% (c = 8, ρ = 0.3): the model keeps Erlang C's probability of
  waiting, too low for bursty arrivals at light load. Asserted against that measured envelope so
  that a change shows up; reported to the planner's owner.
- `sizing.prefill_sizing` (lognormal ISL, cv² = 1, Poisson): its 24 Gauss–Hermite points make a
  staircase CDF whose quantiles snap to nodes: p90 −23.5% at c = 16, ρ = 0.3 (0.343 s predicted,
  0.448 s simulated), p50 up to +27%; the same formula with faithful points is within 2% there.
  The light-load limit test isolates it without simulation. These tests assert what the planner
  needs (the Poisson tolerances) and fail until the discretization is fixed.
- Decode, step simulation (geometric OSL): right at light load; at u = λ·OSL·(β + γL) = 0.64 the
  token-weighted p90 batch is 38–42 (five seeds) where the planner's 1 + Poisson gives 34, at
  u = 0.8 83–93 against 69: ITL p90 11–17% low. The batch is over-dispersed: the chain with birth
  rate λ and death rate n/(OSL·τ(n)) has a negative-binomial batch (variance n̄/(1 − u)), whose
  size-biased p50/p90/p99 (28, 41, 53 and 62, 87, 110) match the simulation. Those rows fail
  until the batch model is changed.

Run with `-s` to see the largest disagreement per regime (test_report_largest_disagreements).
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tokenscale.planner import queueing, sizing
from tokenscale.planner.perf import DecodeModel, PrefillModel, ReplicaPerformance

sys.path.insert(0, str(Path(__file__).parent))  # the test-only helper modules beside this file
from des_queue import ServiceSampler, simulate_decode_steps, simulate_sojourn_s  # noqa: E402

FloatArray = npt.NDArray[np.float64]

QUANTILES = (0.5, 0.9, 0.99)
COUNTS = (1, 2, 4, 8, 16)
LOADS = (0.3, 0.6, 0.85)
ARRIVAL_CA2 = (1.0, 2.5)
# Customers simulated per cell (the first 10% are dropped as warm-up); one server runs Lindley's
# recursion vectorized, cheap enough for a million.
_CUSTOMERS = {0.3: 112_000, 0.6: 112_000, 0.85: 600_000}
_CUSTOMERS_ONE_SERVER = 1_000_000
_WARMUP_FRACTION = 0.1
_SEED = 20240701

# --- service-time distributions ----------------------------------------------------------------

MEAN_SERVICE_S = 0.2
# Prefill-like service: s(ISL) = 20 ms + 0.1 ms/token + 1e-9 s/token², ISL lognormal with mean
# 2000 tokens and cv² = 1 (the planner's default ISL spread). E[S] = 0.228 s, c_s² = 0.973.
PREFILL = PrefillModel(a_s=0.02, b_s_per_token=1e-4, c_s_per_token2=1e-9)
ISL_MEAN_TOKENS, ISL_CV2 = 2000.0, 1.0
_POINTS = 400


@dataclass(frozen=True)
class Service:
    """A service-time distribution: a sampler for the simulation, and points + moments for the model."""

    sample: ServiceSampler
    mean_s: float
    cs2: float
    values_s: FloatArray
    weights: FloatArray


def _lognormal_params(mean: float, cv2: float) -> tuple[float, float]:
    """(μ, σ) of the normal under a lognormal with the given mean and cv²."""
    sigma = math.sqrt(math.log1p(cv2))
    return math.log(mean) - sigma * sigma / 2.0, sigma


def _midpoint_probabilities(points: int) -> FloatArray:
    return (np.arange(points) + 0.5) / points


def _prefill_moments() -> tuple[float, float]:
    """Exact E[S] and c_s² of S = a + bX + cX², X lognormal: E[X^k] = exp(kμ + k²σ²/2)."""
    mu, sigma = _lognormal_params(ISL_MEAN_TOKENS, ISL_CV2)

    def moment(k: int) -> float:
        return math.exp(k * mu + k * k * sigma * sigma / 2.0)

    a, b, c = PREFILL.a_s, PREFILL.b_s_per_token, PREFILL.c_s_per_token2
    first = a + b * moment(1) + c * moment(2)
    second = (
        a * a + b * b * moment(2) + c * c * moment(4) + 2 * a * b * moment(1) + 2 * a * c * moment(2)
    ) + 2 * b * c * moment(3)
    return first, second / first**2 - 1.0


def _services() -> dict[str, Service]:
    u = _midpoint_probabilities(_POINTS)
    equal = np.full(_POINTS, 1.0 / _POINTS)
    mu, sigma = _lognormal_params(ISL_MEAN_TOKENS, ISL_CV2)
    z = np.array([statistics.NormalDist().inv_cdf(float(p)) for p in u])
    isl_points = np.exp(mu + sigma * z)
    prefill_mean_s, prefill_cs2 = _prefill_moments()

    def constant(rng: np.random.Generator, count: int) -> FloatArray:
        return np.full(count, MEAN_SERVICE_S)

    def exponential(rng: np.random.Generator, count: int) -> FloatArray:
        out: FloatArray = rng.exponential(MEAN_SERVICE_S, count)
        return out

    def prefill(rng: np.random.Generator, count: int) -> FloatArray:
        return np.asarray(PREFILL.service_time_s(rng.lognormal(mu, sigma, count)), dtype=np.float64)

    return {
        "deterministic": Service(constant, MEAN_SERVICE_S, 0.0, np.array([MEAN_SERVICE_S]), np.array([1.0])),
        "exponential": Service(exponential, MEAN_SERVICE_S, 1.0, -MEAN_SERVICE_S * np.log1p(-u), equal),
        "lognormal-isl": Service(
            prefill,
            prefill_mean_s,
            prefill_cs2,
            np.asarray(PREFILL.service_time_s(isl_points), dtype=np.float64),
            equal,
        ),
    }


SERVICES = _services()


# --- simulation and model ----------------------------------------------------------------------


@functools.cache
def _simulated(service: str, ca2: float, servers: int, utilization: float) -> tuple[float, float, float]:
    """p50/p90/p99 of the simulated sojourn time of one cell (cached: several tests read a cell)."""
    spec = SERVICES[service]
    rate = utilization * servers / spec.mean_s
    rng = np.random.default_rng([_SEED, servers, round(utilization * 100), round(ca2 * 10), len(service)])
    count = _CUSTOMERS_ONE_SERVER if servers == 1 else _CUSTOMERS[utilization]
    sojourn = simulate_sojourn_s(rng, servers, rate, ca2, spec.sample, count, warmup_fraction=_WARMUP_FRACTION)
    assert sojourn.size >= 100_000
    p50, p90, p99 = np.quantile(sojourn, QUANTILES)
    return float(p50), float(p90), float(p99)


def _predicted(service: str, ca2: float, servers: int, utilization: float) -> FloatArray:
    spec = SERVICES[service]
    rate = utilization * servers / spec.mean_s
    return np.array(
        [
            queueing.sojourn_quantile_s(q, [servers], rate, spec.mean_s, ca2, spec.cs2, spec.values_s, spec.weights)[0]
            for q in QUANTILES
        ]
    )


def _relative_errors(service: str, ca2: float, servers: int, utilization: float) -> FloatArray:
    sim = np.array(_simulated(service, ca2, servers, utilization))
    out: FloatArray = (_predicted(service, ca2, servers, utilization) - sim) / sim
    return out


def _regime(service: str, ca2: float, utilization: float) -> str:
    if ca2 == 1.0:
        return "poisson"
    if utilization >= 0.85:
        return "bursty-heavy"
    return "bursty-light-constant" if service == "deterministic" else "bursty-light"


# Largest |relative error| allowed for (p50, p90, p99), per regime: the measured worst over five
# seeds (module docstring) plus a margin of about a fifth, rounded up.
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "poisson": (0.14, 0.08, 0.23),
    "bursty-heavy": (0.27, 0.13, 0.12),
    "bursty-light": (0.34, 0.17, 0.12),
    # Far off (the model under-predicts by about a third); the measured envelope, see docstring.
    "bursty-light-constant": (0.46, 0.42, 0.41),
}

CELLS = [
    pytest.param(service, ca2, c, rho, id=f"{service}-ca{ca2:g}-c{c}-rho{rho}")
    for service in SERVICES
    for ca2 in ARRIVAL_CA2
    for c in COUNTS
    for rho in LOADS
]


@pytest.mark.parametrize(("service", "ca2", "servers", "utilization"), CELLS)
def test_sojourn_quantiles_match_simulation(service: str, ca2: float, servers: int, utilization: float) -> None:
    errors = _relative_errors(service, ca2, servers, utilization)
    tolerance = TOLERANCES[_regime(service, ca2, utilization)]
    for q, error, allowed in zip(QUANTILES, errors, tolerance, strict=True):
        assert abs(error) <= allowed, f"p{q * 100:g} off by {error:+.1%} (allowed ±{allowed:.0%})"


def test_report_largest_disagreements() -> None:
    # One line per regime and quantile (visible with -s), and the same bounds as the cell tests.
    worst: dict[tuple[str, int], tuple[float, str]] = {}
    for param in CELLS:
        service, ca2, servers, utilization = param.values
        assert isinstance(service, str) and isinstance(ca2, float)
        assert isinstance(servers, int) and isinstance(utilization, float)
        regime = _regime(service, ca2, utilization)
        for i, error in enumerate(_relative_errors(service, ca2, servers, utilization)):
            if abs(error) > abs(worst.get((regime, i), (0.0, ""))[0]):
                worst[(regime, i)] = (float(error), str(param.id))
    print()
    for (regime, i), (error, cell) in sorted(worst.items()):
        print(f"largest model-vs-DES disagreement [{regime}] p{QUANTILES[i] * 100:g}: {error:+.1%} at {cell}")
        assert abs(error) <= TOLERANCES[regime][i]
    assert {regime for regime, _ in worst} == set(TOLERANCES)


# --- the planner's prefill path ----------------------------------------------------------------


def _prefill_perf() -> ReplicaPerformance:
    return ReplicaPerformance(
        prefill=PREFILL,
        decode=DecodeModel(alpha_s=0.01, beta_s=0.0, gamma_s_per_token=0.0),
        kv_capacity_tokens=1e12,
        kv_bytes_per_token=1.0,
        max_batch=1024,
    )


@pytest.mark.parametrize(
    ("servers", "utilization"),
    [pytest.param(c, rho, id=f"c{c}-rho{rho}") for c in (1, 4, 16) for rho in LOADS],
)
def test_prefill_sizing_ttft_matches_simulation(servers: int, utilization: float) -> None:
    # The planner's TTFT quantile (no KV transfer, no first decode step: TTFT = W + s(ISL)) for
    # the lognormal-ISL cells of the grid, with the Poisson tolerances the formula itself meets.
    rate = utilization * servers / SERVICES["lognormal-isl"].mean_s
    load = sizing.Load(rate_per_s=rate, isl_mean_tokens=ISL_MEAN_TOKENS, osl_mean_tokens=100.0, isl_cv2=ISL_CV2)
    counts = np.array([servers])
    predicted = np.array([sizing.prefill_sizing(counts, load, _prefill_perf(), q, 1.0).ttft_s[0] for q in QUANTILES])
    simulated = np.array(_simulated("lognormal-isl", 1.0, servers, utilization))
    errors = (predicted - simulated) / simulated
    for q, error, allowed in zip(QUANTILES, errors, TOLERANCES["poisson"], strict=True):
        assert abs(error) <= allowed, (
            f"prefill_sizing p{q * 100:g} TTFT {predicted[QUANTILES.index(q)]:.3f} s vs simulated "
            f"{simulated[QUANTILES.index(q)]:.3f} s ({error:+.1%}, allowed ±{allowed:.0%})"
        )


@pytest.mark.parametrize("isl_cv2", [pytest.param(v, id=f"isl-cv2-{v:g}") for v in (0.5, 1.0, 2.0)])
@pytest.mark.parametrize("quantile", [pytest.param(q, id=f"p{q * 100:g}") for q in QUANTILES])
def test_prefill_sizing_light_load_limit_is_the_service_quantile(quantile: float, isl_cv2: float) -> None:
    # 16 replicas at 0.1% utilization: nobody waits, so TTFT = s(ISL) and, s being increasing, its
    # q-quantile is s(ISL_q) with ISL_q = exp(μ + σ·z_q) exactly. No simulation involved.
    mu, sigma = _lognormal_params(ISL_MEAN_TOKENS, isl_cv2)
    isl_q = math.exp(mu + sigma * statistics.NormalDist().inv_cdf(quantile))
    expected_s = float(PREFILL.service_time_s(isl_q))
    load = sizing.Load(rate_per_s=0.05, isl_mean_tokens=ISL_MEAN_TOKENS, osl_mean_tokens=100.0, isl_cv2=isl_cv2)
    got_s = float(sizing.prefill_sizing(np.array([16]), load, _prefill_perf(), quantile, 1.0).ttft_s[0])
    assert got_s == pytest.approx(expected_s, rel=0.03), f"TTFT p{quantile * 100:g} {got_s:.4f} s vs {expected_s:.4f} s"


# --- decode: ITL quantile --------------------------------------------------------------------------


def _negbin_quantile(quantile: float, shape: float, u: float) -> int:
    """Smallest k with P(NegBin(shape, u) ≤ k) ≥ q, by summing the pmf term by term."""
    k, term = 0, (1.0 - u) ** shape
    total = term
    while total < quantile:
        k += 1
        term *= u * (k - 1 + shape) / k
        total += term
    return k


DECODE = DecodeModel(alpha_s=0.008, beta_s=1e-4, gamma_s_per_token=2e-7)
DECODE_ISL_TOKENS, DECODE_OSL_TOKENS = 2000.0, 300.0


def _decode_perf() -> ReplicaPerformance:
    return ReplicaPerformance(
        prefill=PREFILL, decode=DECODE, kv_capacity_tokens=1e12, kv_bytes_per_token=1.0, max_batch=100_000
    )


@pytest.mark.parametrize(
    ("rate_per_s", "replicas"),
    [
        pytest.param(0.2, 1, id="one-replica-batch-0.5"),
        pytest.param(6.0, 3, id="three-replicas-batch-7"),
        pytest.param(40.0, 10, id="ten-replicas-batch-26"),
        pytest.param(9.0, 2, id="two-replicas-near-saturation"),
    ],
)
@pytest.mark.parametrize("quantile", [pytest.param(q, id=f"p{q * 100:g}") for q in (0.5, 0.9, 0.99)])
def test_decode_itl_quantile_is_step_time_at_the_size_biased_negbin_quantile(
    rate_per_s: float, replicas: int, quantile: float
) -> None:
    # Independent evaluation of the sizing docstring: n̄ = (λ/m)·OSL·α/(1 − (λ/m)·OSL·(β + γL)),
    # L = ISL + OSL (the size-biased context of geometric outputs, c² = 1); the token-seen batch is
    # 1 + NegBin(α/(β + γL) + 1, u), u = (λ/m)·OSL·(β + γL).
    load = sizing.Load(rate_per_s=rate_per_s, isl_mean_tokens=DECODE_ISL_TOKENS, osl_mean_tokens=DECODE_OSL_TOKENS)
    context = DECODE_ISL_TOKENS + DECODE_OSL_TOKENS  # E[ISL] + E[OSL²]/(2E[OSL]) for geometric OSL
    per_request_s = DECODE.beta_s + DECODE.gamma_s_per_token * context
    tokens_per_s = rate_per_s / replicas * DECODE_OSL_TOKENS
    assert tokens_per_s * per_request_s < 1.0
    u = tokens_per_s * per_request_s
    batch = 1 + _negbin_quantile(quantile, DECODE.alpha_s / per_request_s + 1.0, u)
    expected_s = DECODE.alpha_s + per_request_s * batch
    got = sizing.decode_sizing(np.array([replicas]), load, _decode_perf(), quantile, 1.0)
    assert got.batch_quantile[0] == batch
    assert got.itl_s[0] == pytest.approx(expected_s, rel=1e-12)


@functools.cache
def _decode_trace_quantiles(rate_per_s: float, steps: int) -> tuple[tuple[int, float], ...]:
    context = DECODE_ISL_TOKENS + DECODE_OSL_TOKENS  # E[ISL] + E[OSL²]/(2E[OSL]) for geometric OSL

    def step(batch: int) -> float:
        return float(DECODE.step_time_s(batch, context))

    trace = simulate_decode_steps(
        np.random.default_rng([_SEED, round(rate_per_s * 100)]), rate_per_s, DECODE_OSL_TOKENS, step, steps, steps // 10
    )
    return tuple(trace.token_weighted_quantile(q) for q in QUANTILES)


@pytest.mark.parametrize(
    "rate_per_s",
    [
        # u = λ·OSL·(β + γL) with β + γL = 0.56 ms: the share of a step spent per request.
        pytest.param(0.5, id="u0.08-batch1.3"),
        pytest.param(2.0, id="u0.32-batch7"),
        pytest.param(4.0, id="u0.64-batch26"),
        pytest.param(5.0, id="u0.80-batch59"),
    ],
)
def test_decode_itl_quantiles_match_step_simulation(rate_per_s: float) -> None:
    # One replica, geometric output lengths (the planner's default OSL cv² = 1). The simulated
    # ITL is the token-weighted quantile of step times. Allowed: 5% low, 8% high (measured worst:
    # +6.8% at p99 with u = 0.8, the conservative direction).
    load = sizing.Load(rate_per_s=rate_per_s, isl_mean_tokens=DECODE_ISL_TOKENS, osl_mean_tokens=DECODE_OSL_TOKENS)
    simulated = _decode_trace_quantiles(rate_per_s, 400_000)
    for q, (sim_batch, sim_itl_s) in zip(QUANTILES, simulated, strict=True):
        got = sizing.decode_sizing(np.array([1]), load, _decode_perf(), q, 1.0)
        error = float(got.itl_s[0]) / sim_itl_s - 1.0
        assert -0.05 <= error <= 0.08, (
            f"ITL p{q * 100:g}: predicted {got.itl_s[0] * 1e3:.2f} ms at batch {got.batch_quantile[0]:g}, "
            f"simulated {sim_itl_s * 1e3:.2f} ms at batch {sim_batch} ({error:+.1%})"
        )
