"""Sizing: the decode fixed point, the Poisson batch quantile, the length quadrature, monotonicity."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenscale.planner import plan as planner
from tokenscale.planner import sizing
from tokenscale.planner.perf import DecodeModel, PrefillModel, ReplicaPerformance

sys.path.insert(0, str(Path(__file__).parent))  # the test-only helper modules beside this file
from fleet_replay import Replay, replay  # noqa: E402

PERF = ReplicaPerformance(
    prefill=PrefillModel(a_s=0.01, b_s_per_token=6e-5, c_s_per_token2=0.0),
    decode=DecodeModel(alpha_s=0.008, beta_s=5e-5, gamma_s_per_token=1e-8),
    kv_capacity_tokens=400_000,
    kv_bytes_per_token=131_072,
    max_batch=256,
    kv_transfer_s_per_token=1e-6,
)


@pytest.mark.parametrize(
    ("q", "shape", "u"),
    [
        pytest.param(0.9, 2.0, 0.1, id="light"),
        pytest.param(0.5, 50.0, 0.5, id="median"),
        pytest.param(0.99, 80.0, 0.8, id="heavy"),
        pytest.param(0.9, 200.0, 0.95, id="near-saturation"),
    ],
)
def test_size_biased_batch_quantile_is_one_plus_negbin(q: float, shape: float, u: float) -> None:
    k = int(sizing.size_biased_batch_quantile(q, shape, np.array([u]))[0]) - 1
    r = shape + 1.0

    # Independent check: the NegBin(r, u) pmf from log-gamma, summed in Python floats.
    def cdf(n: int) -> float:
        return sum(
            math.exp(math.lgamma(i + r) - math.lgamma(r) - math.lgamma(i + 1) + r * math.log1p(-u) + i * math.log(u))
            for i in range(n + 1)
        )

    assert cdf(k) >= q - 1e-9
    assert k == 0 or cdf(k - 1) < q


def test_size_biased_batch_quantile_unstable_is_infinite() -> None:
    out = sizing.size_biased_batch_quantile(0.9, 10.0, np.array([0.0, 1.0, np.inf]))
    assert out[0] == 1 and math.isinf(out[1]) and math.isinf(out[2])


@pytest.mark.parametrize(("mean", "cv2"), [(1000.0, 0.0), (1000.0, 1.0), (300.0, 4.0)])
def test_lognormal_points_keep_mean_and_spread(mean: float, cv2: float) -> None:
    values, weights = sizing.lognormal_points(mean, cv2)
    assert weights.sum() == pytest.approx(1.0)
    got_mean = float(np.dot(values, weights))
    assert got_mean == pytest.approx(mean)
    got_cv2 = float(np.dot(weights, (values - got_mean) ** 2)) / got_mean**2
    # Slice means drop the variance within each slice: at most 20% of cv² for these tails.
    assert cv2 * 0.8 - 1e-9 <= got_cv2 <= cv2 + 1e-9
    if cv2 > 0:
        # Quantiles are right to one slice: compare p90 with the lognormal own.
        sigma = math.sqrt(math.log1p(cv2))
        true_p90 = math.exp(math.log(mean) - sigma**2 / 2 + sigma * 1.2815515655446004)
        order = np.argsort(values)
        got_p90 = float(values[order][np.searchsorted(np.cumsum(weights[order]), 0.9 - 1e-12)])
        assert got_p90 == pytest.approx(true_p90, rel=0.04)  # the 1%-wide slice just below p90


def test_decode_batch_solves_littles_law() -> None:
    load = sizing.Load(rate_per_s=20.0, isl_mean_tokens=1000.0, osl_mean_tokens=250.0)
    counts = np.arange(1, 9)
    s = sizing.decode_sizing(counts, load, PERF, 0.5, 1.0)
    mean_ctx = 1000.0 + 250.0  # E[ISL] + E[OSL²]/(2E[OSL]) with the default OSL c² = 1
    for m, n_mean in zip(counts, s.batch_mean, strict=True):
        if not math.isfinite(n_mean):
            continue
        # Solve n = λ·OSL·τ(n) by iteration, independently of the closed form.
        n = 1.0
        for _ in range(2000):
            n = 20.0 / m * 250.0 * float(PERF.decode.step_time_s(n, mean_ctx))
        assert n_mean == pytest.approx(n, rel=1e-6)


def test_decode_more_replicas_never_slower() -> None:
    load = sizing.Load(rate_per_s=60.0, isl_mean_tokens=2000.0, osl_mean_tokens=400.0)
    s = sizing.decode_sizing(np.arange(1, 33), load, PERF, 0.9, 0.05)
    finite = s.tpot_s[np.isfinite(s.tpot_s)]
    assert np.all(np.diff(finite) <= 1e-12)
    i = s.smallest_feasible()
    assert i is not None and s.feasible[i:].all()


@pytest.mark.parametrize(
    ("rate", "isl", "osl", "target", "binding"),
    [
        pytest.param(200.0, 1000.0, 500.0, 0.5, "stability", id="overload-is-unstable"),
        pytest.param(0.5, 30000.0, 2000.0, 0.5, "kv", id="long-contexts-hit-kv"),
        pytest.param(6.0, 100.0, 2000.0, 0.5, "batch", id="many-short-hit-max-batch"),
        pytest.param(30.0, 1000.0, 250.0, 0.0085, "tpot", id="tight-tpot"),
    ],
)
def test_decode_binding_constraint_at_one_replica(
    rate: float, isl: float, osl: float, target: float, binding: str
) -> None:
    load = sizing.Load(rate_per_s=rate, isl_mean_tokens=isl, osl_mean_tokens=osl)
    s = sizing.decode_sizing(np.array([1]), load, PERF, 0.9, target)
    assert str(s.binding[0]) == binding and not s.feasible[0]


# --- aggregated: a prompt is charged the steps it rides in (issue 16) -----------------------------


@pytest.mark.parametrize(
    ("isl_tokens", "room_tokens", "arriving_tokens_per_s", "prompt_share", "steps", "joining_tokens"),
    [
        pytest.param(500.0, 2000.0, 0.0, 0.0, 1, 0.0, id="short-prompt-one-whole-step"),
        pytest.param(2000.0, 2000.0, 0.0, 0.0, 1, 0.0, id="exactly-one-step"),
        pytest.param(2001.0, 2000.0, 0.0, 0.0, 2, 0.0, id="one-token-over-two-steps"),
        pytest.param(4500.0, 1900.0, 0.0, 0.0, 3, 0.0, id="long-prompt-three-steps"),
        # 10,000 prompt tokens/s arrive; half a step (6 ms, stretched to 12 ms at u_p = 0.5) brings 120.
        pytest.param(500.0, 2000.0, 10_000.0, 0.5, 1, 120.0, id="arrivals-during-half-a-step-join"),
        # Two steps: the window adds one full chunk step (12 ms + 2000·60 µs): 1,380 tokens, capped
        # at the 1,000 left in the last step.
        pytest.param(3000.0, 2000.0, 10_000.0, 0.0, 2, 1000.0, id="arrivals-capped-at-the-room-left"),
        # The old rule filled the room in the share u_p of time: 1,500·0.5 = 750 tokens here.
        pytest.param(500.0, 2000.0, 1_000.0, 0.5, 1, 12.0, id="light-arrivals-not-the-prompt-share"),
    ],
)
def test_aggregated_prompt_is_charged_every_step_it_rides_in(
    isl_tokens: float,
    room_tokens: float,
    arriving_tokens_per_s: float,
    prompt_share: float,
    steps: int,
    joining_tokens: float,
) -> None:
    step_s, b, c = 0.012, 6e-5, 1e-9
    perf = ReplicaPerformance(PrefillModel(0.01, b, c), DecodeModel(0.008, 5e-5, 1e-8), 400_000, 131_072, 256)
    got = float(
        sizing.aggregated_prompt_service_s(
            np.array([isl_tokens]), perf, step_s, room_tokens, arriving_tokens_per_s, prompt_share
        )[0]
    )
    # Written out: whole steps, the prompt's own GEMMs and attention, and the prompt tokens that
    # arrive while it rides and join its steps.
    expected = steps * step_s + b * isl_tokens + c * isl_tokens**2 + b * joining_tokens
    assert got == pytest.approx(expected)
    # Never less than the fractional charge the model used before (ISL/room of a step).
    assert got >= isl_tokens / room_tokens * step_s + b * isl_tokens + c * isl_tokens**2


@pytest.mark.parametrize(
    ("rate_per_s", "burst"),
    [
        pytest.param(8.0, 1, id="few-chunks"),
        pytest.param(26.0, 1, id="chunks-near-the-p90"),
        pytest.param(38.0, 1, id="chunks-past-the-p90"),
        pytest.param(32.0, 5, id="bursts-of-5"),
    ],
)
def test_aggregated_itl_quantile_matches_the_simulator(rate_per_s: float, burst: int) -> None:
    # 8B aggregated on 4 replicas: the share of steps carrying a prompt chunk grows from ~2% to
    # past 10%, and the per-token p90 moves from a plain decode step (~8 ms) to a chunk step (~55 ms).
    # Measured: within −6%…+8% (the step-function rule before was −36% and −61% at 26 and 32 req/s).
    r = replay("vllm-aggregated-8b.yaml", "aggregated", 4, rate_per_s, burst)
    predicted = float(_sized(r).itl_s[3])
    simulated = r.itl_s.quantile(0.9)
    print(f"{rate_per_s:g} req/s: p90 ITL {predicted * 1e3:.2f} vs {simulated * 1e3:.2f} ms")
    assert -0.12 <= predicted / simulated - 1.0 <= 0.12


def _sized(r: Replay) -> sizing.PoolSizing:
    return planner.size_pools(r.spec, r.load, r.performance)["aggregated"]
