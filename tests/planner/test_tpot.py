"""planner.tpot: per-request TPOT quantiles, checked against the event-driven simulator (`sim.fleet`).

The simulator (`fleet_replay`) scores each request's (finish − first token)/(OSL − 1), the series
an engine exports per request. Each case replays 15 minutes of arrivals at a fixed fleet and
compares the predicted p90 with the simulated one. Measured here (predicted vs simulated p90):
- 8B aggregated on 4 replicas (a chunk costs a few decode steps): 2–38 req/s Poisson −4%…+3%,
  bursts of 5 at 32 req/s +3%; 70B decode on 2 replicas +1%. The per-token quantile the planner
  used before (the step time at the batch a token sees) was 20–33% low from 20 to 32 req/s and
  2.4× high at 38 req/s.
- One replica like the CPU test engine (a 2,048-token chunk holds the batch for ~65 steps, short
  outputs), before issue 18: Poisson 2/4/6/8 req/s −6%/−11%/−10%/−21%. Under bursts of 5 the model
  was −25%…−42% there (its TTFT is −25% too: the prompt queue under bursts is the open part); the
  busy-period form of the stall (below) took Poisson at 6 req/s from −47% to −10%.
- Issue 16, second pass: the stall's lead (the mean time to first token, from
  `sizing.aggregated_sizing`) was 28–49% above the simulator's mean TTFT in the one-replica cases
  (113/157/204 ms against 89/110/137 ms at 2/4/6 req/s); the aggregated TTFT model now lands at
  86/103/124 ms. Without that excess the stall model itself shows: 4 and 6 req/s are −18% and
  −22% (were −11% and −10%), held to −25% until the stall model is revisited (issue 18).
- Issue 18: the prompts that stall a request join its batch (`planner.tpot._life`), its group-mates
  share its steps, the stall given one is gamma, a burst is spread over the replicas, and the lead
  counts the group-mates ahead of the request. One replica, Poisson 2/4/6 req/s: 6.25/9.72/15.54 ms
  against 6.90/11.89/19.80 (−9%/−18%/−22%) → 6.91/11.50/19.84 (0%/−3%/+0%), now held to −10%;
  8 req/s (new case) −33% → −3%; bursts of 5 at 2/4/6 req/s (new cases) 13.29/19.68/29.83 ms
  against 18.02/32.69/55.36 (−26%/−40%/−46%) → 18.60/30.66/51.45 (+3%/−6%/−7%). 8B on 4 replicas:
  2/20/38 req/s +3%/+2%/+2% → +4%/+5%/+5%, bursts of 5 +3% → −3%; 70B decode unchanged (+1%).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tokenscale import api
from tokenscale.planner import plan as planner
from tokenscale.planner import tpot

sys.path.insert(0, str(Path(__file__).parent))  # the test-only helper modules beside this file
from fleet_replay import replay  # noqa: E402


@pytest.mark.parametrize(
    ("example", "role", "replicas", "rate_per_s", "burst", "cpu_engine", "lowest_error"),
    [
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 4, 2.0, 1, False, -0.15, id="aggregated-light"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 4, 20.0, 1, False, -0.15, id="aggregated-medium"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 4, 38.0, 1, False, -0.15, id="aggregated-heavy"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 4, 32.0, 5, False, -0.15, id="aggregated-bursts-of-5"),
        pytest.param("vllm-disaggregated-70b.yaml", "decode", 2, 4.0, 1, False, -0.15, id="disaggregated-decode"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 2.0, 1, True, -0.10, id="stalls-light"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 4.0, 1, True, -0.10, id="stalls-medium"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 6.0, 1, True, -0.10, id="stalls-heavy"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 8.0, 1, True, -0.10, id="stalls-saturated"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 2.0, 5, True, -0.10, id="stalls-bursts-light"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 4.0, 5, True, -0.10, id="stalls-bursts-medium"),
        pytest.param("vllm-aggregated-8b.yaml", "aggregated", 1, 6.0, 5, True, -0.10, id="stalls-bursts-heavy"),
    ],
)
def test_per_request_p90_tpot_matches_the_simulator(
    example: str,
    role: api.Role,
    replicas: int,
    rate_per_s: float,
    burst: int,
    cpu_engine: bool,
    lowest_error: float,
) -> None:
    r = replay(example, role, replicas, rate_per_s, burst, cpu_engine)
    predicted = float(planner.size_pools(r.spec, r.load, r.performance)[role].tpot_s[replicas - 1])
    simulated = float(np.nanquantile(r.tpot_s, 0.9))
    error = predicted / simulated - 1.0
    print(
        f"{example} {role}×{replicas} {rate_per_s:g} req/s: p90 TPOT {predicted * 1e3:.2f} vs {simulated * 1e3:.2f} ms"
    )
    assert lowest_error <= error <= 0.10, (
        f"p90 TPOT predicted {predicted * 1e3:.2f} ms vs simulated {simulated * 1e3:.2f} ms"
    )


def test_stalls_raise_the_tail_of_short_requests_most() -> None:
    # Prompts of 50 ms arrive at 2/s (u_p = 0.1), and every one of them becomes a sequence of the
    # batch (the chain's u = λ·OSL·per-sequence cost/(1 − u_p)). A 3-token request (2 steps of
    # ~10 ms) meets one with probability ~4%, and then waits it out over 2 steps; a 400-token one
    # meets ~10 of them, spread over 399 steps. At p99 the short request's tail is the stall, the
    # long one's is not.
    prompts = tpot.PromptWork(np.array([2.0]), 0.05, 0.05**2 * 2.0, np.array([0.1]))

    def chain(osl: float) -> npt.NDArray[np.float64]:
        return np.array([2.0 * osl * 1e-4 / 0.9])

    short = tpot.request_tpot_quantile_s(0.99, 0.01, 1e-4, chain(3.0), 3.0, 0.0, prompts)
    long = tpot.request_tpot_quantile_s(0.99, 0.01, 1e-4, chain(400.0), 400.0, 0.0, prompts)
    alone = tpot.request_tpot_quantile_s(0.99, 0.01, 1e-4, chain(400.0), 400.0, 0.0)
    assert short[0] > 0.05 / 2 > long[0]
    assert long[0] > alone[0] / 0.9 * 0.98  # stalls lengthen every request on average: τ/(1 − u_p)


def test_without_prompts_the_median_is_the_step_time_at_the_mean_batch() -> None:
    # Disaggregated decode: the median request sees the mean batch, itself plus NegBin(r, u)
    # others with r = α/per-sequence cost (mean r·u/(1 − u)); the p99 lies above it by less than
    # the one-step spread, which averaging over a 200-token life shrinks.
    alpha_s, per_seq_s, u = 0.01, 1e-4, 0.3
    r = alpha_s / per_seq_s
    mean_s = alpha_s + per_seq_s * (1.0 + r * u / (1.0 - u))
    one_step_sd_s = per_seq_s * np.sqrt(r * u) / (1.0 - u)
    p50 = tpot.request_tpot_quantile_s(0.5, alpha_s, per_seq_s, np.array([u]), 200.0, 1.0)
    p99 = tpot.request_tpot_quantile_s(0.99, alpha_s, per_seq_s, np.array([u]), 200.0, 1.0)
    assert p50[0] == pytest.approx(mean_s, rel=1e-3)
    assert mean_s < p99[0] < mean_s + 2.33 * one_step_sd_s


def test_an_unstable_candidate_is_infinite() -> None:
    got = tpot.request_tpot_quantile_s(0.9, 0.01, 1e-4, np.array([0.5, 1.0, np.inf]), 200.0, 1.0)
    assert np.isfinite(got[0]) and np.isinf(got[1:]).all()


def test_a_modulated_rate_mixes_the_points_laws_weighted_by_their_requests() -> None:
    # Two rates, half the bins each at u = 0.2 and u = 0.6: requests weigh 1 : 3 (arrivals ∝ rate), so
    # at the mixture's p90 the CDFs, weighted 1/4 and 3/4, sum to 0.9.
    alpha_s, per_seq_s = 0.01, 1e-4
    low, high = np.array([0.2]), np.array([0.6])
    points = (tpot.RatePoint(0.5 * 0.5, low), tpot.RatePoint(0.5 * 1.5, high))
    got = tpot.modulated_request_tpot_quantile_s(0.9, alpha_s, per_seq_s, points, 200.0, 1.0)[0]
    levels = np.linspace(0.001, 0.999999, 1500)
    q_low = tpot.request_tpot_quantile_s(0.9, alpha_s, per_seq_s, low, 200.0, 1.0)[0]
    q_high = tpot.request_tpot_quantile_s(0.9, alpha_s, per_seq_s, high, 200.0, 1.0)[0]
    assert q_low < got < q_high
    # The mixture's CDF at `got`, read off each point's quantile function: P(T ≤ got) = the level
    # whose quantile is `got`.
    below_low = levels[np.searchsorted([tpot.request_tpot_quantile_s(x, alpha_s, per_seq_s, low, 200.0, 1.0)[0]
                                        for x in levels], got) - 1]  # fmt: skip
    below_high = levels[np.searchsorted([tpot.request_tpot_quantile_s(x, alpha_s, per_seq_s, high, 200.0, 1.0)[0]
                                         for x in levels], got) - 1]  # fmt: skip
    assert 0.25 * below_low + 0.75 * below_high == pytest.approx(0.9, abs=2e-3)
    # One point is the stationary law itself.
    alone = tpot.modulated_request_tpot_quantile_s(0.9, alpha_s, per_seq_s, (tpot.RatePoint(1.0, high),), 200.0, 1.0)
    assert alone[0] == pytest.approx(q_high, rel=1e-9)


@pytest.mark.parametrize(("unstable_share", "finite"), [(0.05, True), (0.2, False)])
def test_an_unstable_rate_point_counts_its_requests_as_missing(unstable_share: float, finite: bool) -> None:
    # Requests arriving while the chain is unstable miss every bound: the p90 exists only while the
    # stable points carry at least 90% of the requests, and then lies above the stable point's own p90.
    stable = np.array([0.5])
    points = (tpot.RatePoint(1.0 - unstable_share, stable), tpot.RatePoint(unstable_share, np.array([1.2])))
    got = tpot.modulated_request_tpot_quantile_s(0.9, 0.01, 1e-4, points, 200.0, 1.0)[0]
    assert np.isfinite(got) == finite
    if finite:
        assert got > tpot.request_tpot_quantile_s(0.9, 0.01, 1e-4, stable, 200.0, 1.0)[0]


def test_the_averaging_factor_is_one_for_one_step_and_falls_as_the_life_grows() -> None:
    f = tpot.averaging_factor(np.array([1e-6, 1.0, 10.0, 1000.0]), 10.0)
    assert f[0] == pytest.approx(1.0, abs=1e-6)
    assert f[1] > f[2] > f[3]
    assert f[3] == pytest.approx(2 * (100 - 1 + np.exp(-100)) / 100**2, rel=1e-9)
