"""The simulated fleet (sim/fleet.py): exact timings, conservation, queueing laws, cold start and drain."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from tokenscale.api import Mode, Role
from tokenscale.planner.perf import DecodeModel, PrefillModel, ReplicaPerformance
from tokenscale.sim.fleet import Fleet, FleetConfig, PoolConfig, SimulationStuck
from tokenscale.sim.snapshot import FleetSnapshot
from tokenscale.sim.workload import LengthDistribution, Workload, make_workload, synthetic_workload

A, B, C = 0.01, 6e-5, 1e-9  # prefill s(ISL) = a + b·ISL + c·ISL²
ALPHA, BETA, GAMMA = 0.008, 5e-5, 1e-8  # decode τ(n, L) = α + β·n + γ·n·L
PERF = ReplicaPerformance(
    prefill=PrefillModel(A, B, C),
    decode=DecodeModel(ALPHA, BETA, GAMMA),
    kv_capacity_tokens=400_000,
    kv_bytes_per_token=131_072,
    max_batch=256,
    kv_transfer_s_per_token=1e-6,
)


def perf_with(**changes: object) -> ReplicaPerformance:
    fields: dict[str, object] = {
        "prefill": PERF.prefill,
        "decode": PERF.decode,
        "kv_capacity_tokens": PERF.kv_capacity_tokens,
        "kv_bytes_per_token": PERF.kv_bytes_per_token,
        "max_batch": PERF.max_batch,
        "kv_transfer_s_per_token": PERF.kv_transfer_s_per_token,
    }
    fields.update(changes)
    return ReplicaPerformance(**fields)  # type: ignore[arg-type]


def fleet(
    workload: Workload,
    mode: Mode = "Disaggregated",
    replicas: tuple[int, ...] = (2, 2),
    perf: ReplicaPerformance = PERF,
    seed: int = 0,
    **options: float,
) -> Fleet:
    if mode == "Disaggregated":
        pools = {"prefill": PoolConfig(perf, replicas[0], 1), "decode": PoolConfig(perf, replicas[1], 2)}
    else:
        pools = {"aggregated": PoolConfig(perf, replicas[0], 1)}
    config = FleetConfig(mode, pools, **options)  # type: ignore[arg-type]
    return Fleet(workload, config, np.random.default_rng(seed))


def poisson(seed: int, duration_s: float, rate_per_s: float, isl: float, osl: float, cv: float = 0.0) -> Workload:
    return synthetic_workload(
        np.random.default_rng(seed),
        duration_s,
        rate_per_s,
        shape="constant",
        isl=LengthDistribution(isl, cv, 1, 10**6),
        osl=LengthDistribution(osl, cv, 1, 10**6),
    )


def one_request(isl: int, osl: int) -> Workload:
    return make_workload("one", [0.0], [isl], [osl])


# ---------------------------------------------------------------------------------------------
# Exact single-request timings: the counter arithmetic against closed forms
# ---------------------------------------------------------------------------------------------


OUTSIDE = A - ALPHA  # aggregated: the part of s(0) outside the engine's steps, seen on every token


def decode_time(n_steps: int, context0: float) -> float:
    """∫ τ(1, context0 + x) dx over x ∈ [0, n_steps]: one sequence whose context grows continuously."""
    return n_steps * (ALPHA + BETA + GAMMA * context0) + GAMMA * n_steps * n_steps / 2.0


@pytest.mark.parametrize(
    ("mode", "isl", "osl", "ttft_s", "e2e_s"),
    [
        pytest.param(
            "Disaggregated",
            1000,
            50,
            A + B * 1000 + C * 1e6 + 1e-6 * 1000 + decode_time(1, 1000),
            A + B * 1000 + C * 1e6 + 1e-6 * 1000 + decode_time(50, 1000),
            id="disagg-prefill-kv-first-step",
        ),
        pytest.param(
            "Disaggregated",
            300,
            1,
            A + B * 300 + C * 9e4 + 3e-4 + decode_time(1, 300),
            A + B * 300 + C * 9e4 + 3e-4 + decode_time(1, 300),
            id="disagg-single-token",
        ),
        pytest.param(
            "Aggregated",
            1000,
            50,
            ALPHA + B * 1000 + C * 1e6 + OUTSIDE,
            ALPHA + B * 1000 + C * 1e6 + decode_time(49, 1001) + OUTSIDE,
            id="agg-one-chunk",
        ),
        pytest.param(
            "Aggregated",
            3000,
            10,
            2 * ALPHA + B * 3000 + C * 9e6 + OUTSIDE,  # two chunks: 2048 then 952 tokens; c·ISL² split exactly
            2 * ALPHA + B * 3000 + C * 9e6 + decode_time(9, 3001) + OUTSIDE,
            id="agg-two-chunks",
        ),
    ],
)
def test_single_request_timings(mode: Mode, isl: int, osl: int, ttft_s: float, e2e_s: float) -> None:
    f = fleet(one_request(isl, osl), mode, replicas=(1, 1), cold_start_s=0.0)
    f.run_to_completion()
    rec = f.records()
    assert rec.ttft_s[0] == pytest.approx(ttft_s, rel=1e-9)
    assert rec.e2e_s[0] == pytest.approx(e2e_s, rel=1e-9)
    if osl > 1:
        assert rec.tpot_s[0] == pytest.approx((e2e_s - ttft_s) / (osl - 1), rel=1e-9)
    else:
        assert math.isnan(rec.tpot_s[0])


def test_a_prior_whose_intercept_is_inside_a_step_adds_no_outside_time() -> None:
    # A roofline prior's s(0) is below the step's fixed cost α: nothing is spent outside the steps.
    perf = perf_with(prefill=PrefillModel(ALPHA / 2, B, C))
    f = fleet(one_request(1000, 50), "Aggregated", replicas=(1,), perf=perf, cold_start_s=0.0)
    f.run_to_completion()
    assert f.records().ttft_s[0] == pytest.approx(ALPHA + B * 1000 + C * 1e6, rel=1e-9)


def test_prefill_batching_serves_waiting_prompts_together() -> None:
    # r0 occupies the only prefill replica; r1..r3 queue behind it; r1 + r2 fill the 2000-token budget.
    w = make_workload("batch", [0.0, 0.001, 0.001, 0.001], [1000] * 4, [5] * 4)
    f = fleet(w, replicas=(1, 4), cold_start_s=0.0, prefill_batch_tokens=2000)
    f.run_to_completion()
    one = A + B * 1000 + C * 1e6
    two = A + 2 * (B * 1000 + C * 1e6)  # one fixed cost per batch
    np.testing.assert_allclose(f.records().prefill_end_s, [one, one + two, one + two, one + two + one], rtol=1e-12)


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        pytest.param("kv_capacity_tokens", 2 * 1100, id="kv-fits-two"),
        pytest.param("max_batch", 2, id="batch-of-two"),
    ],
)
def test_decode_admission_waits_for_room(limit: str, value: int) -> None:
    w = make_workload("three", [0.0, 0.0, 0.0], [1000, 1000, 1000], [100, 100, 100])
    f = fleet(w, replicas=(3, 1), perf=perf_with(**{limit: value}), cold_start_s=0.0)
    f.run_to_completion()
    rec = f.records()
    first_two_done = np.sort(rec.finish_s)[:2]
    assert rec.decode_start_s[2] == pytest.approx(first_two_done.min(), rel=1e-12)
    assert np.all(rec.decode_start_s[:2] < rec.decode_start_s[2])


def test_request_larger_than_the_cache_runs_alone() -> None:
    w = make_workload("big", [0.0, 0.0], [5000, 100], [10, 10])
    f = fleet(w, replicas=(2, 1), perf=perf_with(kv_capacity_tokens=1000), cold_start_s=0.0)
    f.run_to_completion()
    rec = f.records()
    assert np.all(np.isfinite(rec.finish_s))
    assert rec.decode_start_s[0] >= rec.finish_s[1] or rec.decode_start_s[1] >= rec.finish_s[0]


# ---------------------------------------------------------------------------------------------
# Conservation under scaling (cold start, drain)
# ---------------------------------------------------------------------------------------------

Action = tuple[float, Role, int]


@pytest.mark.parametrize(
    ("mode", "replicas", "actions"),
    [
        pytest.param("Disaggregated", (3, 4), [], id="disagg-steady"),
        pytest.param("Disaggregated", (4, 6), [(200.0, "prefill", 1), (200.0, "decode", 1)], id="disagg-drain-mid-run"),
        pytest.param(
            "Disaggregated",
            (1, 1),
            [(50.0, "prefill", 4), (50.0, "decode", 5), (400.0, "decode", 2), (401.0, "decode", 6)],
            id="disagg-up-down-up",
        ),
        pytest.param("Aggregated", (4,), [], id="agg-steady"),
        pytest.param("Aggregated", (6,), [(150.0, "aggregated", 1), (450.0, "aggregated", 3)], id="agg-drain-then-up"),
    ],
)
def test_every_request_finishes_exactly_once(mode: Mode, replicas: tuple[int, ...], actions: list[Action]) -> None:
    w = poisson(1, 600.0, 8.0, 1000, 200, cv=1.0)
    f = fleet(w, mode, replicas, cold_start_s=30.0, cold_start_jitter_s=10.0)
    for t, role, n in actions:
        f.set_replicas(role, n, t)
    f.run_to_completion()
    rec = f.records()
    snap = f.snapshot(f.now_s)
    assert snap.arrivals_total == snap.finished_total == w.n_requests
    assert snap.e2e_s.count == w.n_requests  # one finish observation per request: none twice
    assert snap.ttft_s.count == w.n_requests
    assert np.all(np.isfinite(rec.finish_s))
    assert np.all(rec.arrival_s <= rec.prefill_start_s)
    assert np.all(rec.prefill_start_s <= rec.prefill_end_s)
    assert np.all(rec.first_token_s <= rec.finish_s)
    assert snap.prompt_tokens_total == pytest.approx(float(w.isl_tokens.sum()), rel=1e-9)
    assert snap.generation_tokens_total == pytest.approx(float(w.osl_tokens.sum()), rel=1e-9)
    for role, pool in snap.pools.items():
        assert pool.replicas_draining == 0 and pool.running_requests == 0 and pool.waiting_requests == 0
        replica_s = pool.gpu_seconds_total / f.config.pools[role].gpus_per_replica
        assert 0.0 < pool.busy_replica_seconds_total <= replica_s


def test_drain_keeps_the_replica_until_its_requests_finish() -> None:
    w = poisson(2, 300.0, 10.0, 500, 400)
    f = fleet(w, replicas=(2, 4), cold_start_s=0.0)
    snap = f.snapshot(150.0)
    busy = snap.pools["decode"].running_requests
    assert busy > 4  # every replica has sequences in flight
    f.set_replicas("decode", 1, 150.0)
    after = f.snapshot(150.0).pools["decode"]
    assert (after.replicas_current, after.replicas_ready, after.replicas_draining) == (1, 1, 3)
    assert after.running_requests == busy  # nothing dropped
    assert after.gpus == 4 * 2  # draining replicas still hold their GPUs
    f.run_until(200.0)
    assert f.snapshot(200.0).pools["decode"].replicas_draining == 0
    f.run_to_completion()
    assert np.all(np.isfinite(f.records().finish_s))


@pytest.mark.parametrize(
    ("cold_s", "jitter_s", "seed"),
    [
        pytest.param(60.0, 0.0, 0, id="fixed-60s"),
        pytest.param(120.0, 30.0, 1, id="jittered-120s"),
        pytest.param(120.0, 30.0, 2, id="jittered-other-seed"),
    ],
)
def test_cold_start_delays_readiness(cold_s: float, jitter_s: float, seed: int) -> None:
    w = make_workload("empty-ish", [0.0], [10], [2], duration_s=1000.0)
    f = fleet(w, replicas=(1, 1), seed=seed, cold_start_s=cold_s, cold_start_jitter_s=jitter_s)
    f.set_replicas("prefill", 3, 10.0)
    pool = f.snapshot(10.0).pools["prefill"]
    assert (pool.replicas_current, pool.replicas_ready, pool.replicas_starting) == (3, 1, 2)
    ready_at: list[float] = []
    t = 10.0
    while t < 10.0 + cold_s + jitter_s + 1.0:
        t += 0.25
        ready = f.snapshot(t).pools["prefill"].replicas_ready
        ready_at.extend([t] * (ready - 1 - len(ready_at)))
    assert len(ready_at) == 2
    for when in ready_at:
        assert 10.0 + cold_s - jitter_s <= when <= 10.0 + cold_s + jitter_s + 0.25
    if jitter_s == 0.0:
        assert ready_at == [10.0 + cold_s, 10.0 + cold_s]


def test_cold_start_jitter_comes_from_the_rng() -> None:
    def ready_times(seed: int) -> list[float]:
        w = make_workload("x", [0.0], [10], [2], duration_s=1000.0)
        f = fleet(w, replicas=(1, 1), seed=seed, cold_start_s=100.0, cold_start_jitter_s=50.0)
        f.set_replicas("decode", 5, 0.0)
        times = []
        for k in range(1, 801):
            if f.snapshot(k * 0.25).pools["decode"].replicas_ready > 1 + len(times):
                times.append(k * 0.25)
        return times

    assert ready_times(3) == ready_times(3)
    assert ready_times(3) != ready_times(4)


def test_scale_down_removes_starting_replicas_first() -> None:
    w = make_workload("x", [0.0], [10], [2], duration_s=1000.0)
    f = fleet(w, replicas=(2, 2), cold_start_s=100.0)
    f.set_replicas("decode", 5, 10.0)
    f.set_replicas("decode", 3, 20.0)
    pool = f.snapshot(20.0).pools["decode"]
    assert (pool.replicas_current, pool.replicas_ready, pool.replicas_starting, pool.replicas_draining) == (3, 2, 1, 0)
    f.set_replicas("decode", 1, 30.0)
    pool = f.snapshot(30.0).pools["decode"]
    assert (pool.replicas_current, pool.replicas_ready, pool.replicas_starting) == (1, 1, 0)


@pytest.mark.parametrize(
    ("actions", "end_s", "expected_gpu_s"),
    [
        pytest.param([], 100.0, 2 * 100.0 * 2, id="two-decode-replicas-100s"),
        # +2 at t=100 (cold 50 s: counted while starting), down to 1 at t=300 (idle: removed at once).
        pytest.param([(100.0, 4), (300.0, 1)], 400.0, 2 * (2 * 300 + 2 * 200 + 1 * 100), id="up-then-down"),
        # A starting replica removed before it is ready still counts the time it held its GPUs.
        pytest.param([(100.0, 3), (120.0, 2)], 200.0, 2 * (2 * 200 + 20), id="cancelled-cold-start"),
    ],
)
def test_gpu_seconds(actions: list[tuple[float, int]], end_s: float, expected_gpu_s: float) -> None:
    w = make_workload("x", [0.0], [10], [2], duration_s=end_s)
    f = fleet(w, replicas=(1, 2), cold_start_s=50.0)
    for t, n in actions:
        f.set_replicas("decode", n, t)
    assert f.snapshot(end_s).pools["decode"].gpu_seconds_total == pytest.approx(expected_gpu_s)


def test_pool_with_no_replicas_is_reported_stuck() -> None:
    f = fleet(poisson(3, 20.0, 2.0, 100, 10), replicas=(1, 0), cold_start_s=0.0)
    with pytest.raises(SimulationStuck, match="can never finish"):
        f.run_to_completion()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda f: f.set_replicas("aggregated", 2, 1.0), "no aggregated pool", id="wrong-role"),
        pytest.param(lambda f: f.set_replicas("decode", -1, 1.0), "≥ 0", id="negative-count"),
        pytest.param(lambda f: (f.run_until(5.0), f.run_until(4.0)), "back in time", id="time-goes-forward"),
    ],
)
def test_invalid_calls(call: Callable[[Fleet], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(fleet(one_request(10, 2)))


# ---------------------------------------------------------------------------------------------
# Queueing laws
# ---------------------------------------------------------------------------------------------


def time_average_count(start: np.ndarray, end: np.ndarray, t0: float, t1: float) -> float:
    """Exact time-average over [t0, t1] of the number of intervals [start, end) in progress."""
    return float((np.clip(end, t0, t1) - np.clip(start, t0, t1)).sum() / (t1 - t0))


@pytest.mark.parametrize(
    ("mode", "replicas"),
    [pytest.param("Disaggregated", (3, 3), id="disaggregated"), pytest.param("Aggregated", (4,), id="aggregated")],
)
def test_littles_law_on_the_exported_gauges(mode: Mode, replicas: tuple[int, ...]) -> None:
    """Time-averaged gauges (sampled like a scraper) equal λ × mean time spent, per stage."""
    duration, rate = 1500.0, 12.0
    w = poisson(4, duration, rate, 800, 150, cv=1.0)
    f = fleet(w, mode, replicas, cold_start_s=0.0)
    t0, t1, dt = 100.0, duration, 0.5
    f.run_until(t0)
    samples: list[FleetSnapshot] = []
    t = t0
    while t < t1:
        t += dt
        samples.append(f.snapshot(t))
    f.run_to_completion()
    rec = f.records()
    arrived = (rec.arrival_s > t0) & (rec.arrival_s <= t1)
    lam = arrived.sum() / (t1 - t0)
    in_system = np.mean([s.in_system for s in samples])
    assert in_system == pytest.approx(lam * rec.e2e_s[arrived].mean(), rel=0.05)
    gauges = [
        sum(p.running_requests + p.waiting_requests for p in s.pools.values()) + s.kv_transfers_in_flight
        for s in samples
    ]
    assert gauges == [s.in_system for s in samples]  # every request is in exactly one place
    if mode == "Disaggregated":
        decode = np.mean([s.pools["decode"].running_requests for s in samples])
        residence = (rec.finish_s - rec.decode_start_s)[arrived].mean()
        assert decode == pytest.approx(lam * residence, rel=0.05)


@pytest.mark.parametrize("rho", [pytest.param(0.5, id="rho-0.5"), pytest.param(0.8, id="rho-0.8")])
def test_single_prefill_server_is_md1(rho: float) -> None:
    """Poisson arrivals, deterministic ISL, one server: mean wait ρD/(2(1−ρ)) (Pollaczek–Khinchine)."""
    service = A + B * 1000 + C * 1e6
    lam = rho / service
    w = poisson(5, 4000.0, lam, 1000, 20)
    f = fleet(w, replicas=(1, 2), cold_start_s=0.0)
    f.run_to_completion()
    rec = f.records()
    wait = (rec.prefill_start_s - rec.arrival_s).mean()
    realized_rho = w.n_requests / w.duration_s * service
    assert wait == pytest.approx(realized_rho * service / (2 * (1 - realized_rho)), rel=0.08)
    np.testing.assert_allclose(rec.prefill_end_s - rec.prefill_start_s, service, rtol=1e-9)
    busy_s = f.snapshot(f.now_s).pools["prefill"].busy_replica_seconds_total
    assert busy_s == pytest.approx(w.n_requests * service, rel=1e-9)  # utilization counter: Σ service


@pytest.mark.parametrize(
    ("gamma", "rate"),
    [
        pytest.param(0.0, 20.0, id="no-context-term"),
        pytest.param(1e-7, 20.0, id="context-term"),
        pytest.param(0.0, 10.0, id="lighter-load"),
    ],
)
def test_decode_batch_is_littles_fixed_point(gamma: float, rate: float) -> None:
    """One decode replica: mean batch n solves n = λ·OSL·τ(n, L), L = ISL + OSL/2 (DESIGN.md)."""
    isl, osl = 500, 200
    perf = perf_with(decode=DecodeModel(ALPHA, BETA, gamma), kv_capacity_tokens=10**7, max_batch=4096)
    w = poisson(6, 2000.0, rate, isl, osl)
    f = fleet(w, replicas=(4, 1), perf=perf, cold_start_s=0.0)
    f.run_to_completion()
    rec = f.records()
    t0, t1 = 200.0, 1800.0
    n_bar = time_average_count(rec.decode_start_s, rec.finish_s, t0, t1)
    lam = ((rec.arrival_s > t0) & (rec.arrival_s <= t1)).sum() / (t1 - t0)
    load = lam * osl
    n_fixed = load * ALPHA / (1.0 - load * (BETA + gamma * (isl + osl / 2)))
    assert n_bar == pytest.approx(n_fixed, rel=0.03)
    # And TPOT is the step time at about that batch.
    tpot = float(np.nanmean(rec.tpot_s))
    assert tpot == pytest.approx(ALPHA + BETA * n_fixed + gamma * n_fixed * (isl + osl / 2), rel=0.03)


# ---------------------------------------------------------------------------------------------
# Exported metrics agree with the per-request records
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [pytest.param("Disaggregated", id="disaggregated"), pytest.param("Aggregated", id="aggregated")]
)
def test_histograms_match_records(mode: Mode) -> None:
    w = poisson(7, 300.0, 6.0, 1000, 100, cv=1.0)
    f = fleet(w, mode, (2, 2) if mode == "Disaggregated" else (3,), cold_start_s=0.0)
    mid = f.snapshot(150.0)
    f.run_to_completion()
    end = f.snapshot(f.now_s)
    rec = f.records()
    assert end.ttft_s.sum == pytest.approx(float(np.nansum(rec.ttft_s)), rel=1e-9)
    multi = rec.osl_tokens > 1
    assert end.tpot_s.count == multi.sum()
    assert end.tpot_s.sum == pytest.approx(float(rec.tpot_s[multi].sum()), rel=1e-9)
    assert end.e2e_s.sum == pytest.approx(float(rec.e2e_s.sum()), rel=1e-9)
    assert end.queue_time_s.sum == pytest.approx(float((rec.prefill_start_s - rec.arrival_s).sum()), rel=1e-9)
    assert end.prompt_tokens.sum == float(w.isl_tokens.sum())
    # A window is the difference of two cumulative snapshots: exactly the TTFTs observed after `mid`.
    window = end.ttft_s.minus(mid.ttft_s)
    late = rec.first_token_s > 150.0
    in_bucket = np.searchsorted(np.array(window.bounds), rec.ttft_s[late], side="left")
    expected = np.cumsum(np.bincount(in_bucket, minlength=len(window.bounds) + 1))
    np.testing.assert_array_equal(window.bucket_counts, expected)
    # ITL histogram: token-weighted step times; its mean is the token-weighted TPOT.
    assert end.itl_s.mean() == pytest.approx(
        float(np.average(rec.tpot_s[multi], weights=w.osl_tokens[multi] - 1)), rel=0.1
    )
