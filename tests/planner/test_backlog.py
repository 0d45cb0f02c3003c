"""planner.backlog: the fluid drain of a queue, against closed forms and against the simulated fleet."""

from __future__ import annotations

import numpy as np
import pytest
from harness.replicas import SMALL_REPLICA

from tokenscale.planner import backlog, sizing
from tokenscale.planner.perf import ReplicaPerformance
from tokenscale.sim.fleet import Fleet, FleetConfig, PoolConfig
from tokenscale.sim.workload import make_workload

PERF = SMALL_REPLICA


@pytest.mark.parametrize(
    ("backlog_s", "offered", "ready", "current", "pending_s", "expected_s"),
    [
        pytest.param(100.0, 3.0, 2, 2, 0.0, 100.0 + 1.0 * 240, id="overloaded-grows-by-(a-n)H"),
        pytest.param(400.0, 3.0, 2, 5, 60.0, 400.0 + 1.0 * 60 - 2.0 * 180, id="starting-replicas-drain-it"),
        pytest.param(100.0, 3.0, 2, 4, 60.0, 100.0 + 60 - 180, id="drains-to-zero-never-below"),
        pytest.param(10.0, 1.0, 4, 4, 0.0, 0.0, id="spare-replicas-clear-it"),
        pytest.param(0.0, 5.0, 2, 2, 500.0, 3.0 * 240, id="pending-beyond-the-horizon-is-the-horizon"),
    ],
)
def test_backlog_at_the_horizon_is_the_fluid_queue(
    backlog_s: float, offered: float, ready: int, current: int, pending_s: float, expected_s: float
) -> None:
    got = backlog.backlog_at_replica_s(backlog_s, offered, ready, current, pending_s, 240.0)
    assert got == pytest.approx(max(expected_s, 0.0))


def test_offered_load_is_what_a_growing_queue_shows() -> None:
    # 4 ready replicas, all busy while 50 wait, and the queue grows by 2 requests a second of 0.5 s each.
    assert backlog.offered_replicas(3.0, 4, 0.5, 50.0, 2.0) == pytest.approx(5.0)
    # The model's offered load stands when it is larger, when nothing waits, and with no growth read.
    assert backlog.offered_replicas(6.0, 4, 0.5, 50.0, 2.0) == 6.0
    assert backlog.offered_replicas(3.0, 4, 0.5, 0.0, 2.0) == 3.0
    assert backlog.offered_replicas(3.0, 4, 0.5, 50.0, None) == 3.0


def test_a_queue_is_a_backlog_when_its_own_wait_reaches_the_target() -> None:
    # 20 requests of 0.1 s on 2 replicas: 1 s of wait.
    assert backlog.is_backlog(20.0, 0.1, 2, 1.0)
    assert not backlog.is_backlog(19.0, 0.1, 2, 1.0)
    assert not backlog.is_backlog(0.0, 0.1, 0, 0.0)
    assert backlog.is_backlog(10.0, 0.1, 0, 1.0)  # no replica ready: the queue waits on one


def test_growth_is_read_against_a_sample_at_least_half_an_interval_old() -> None:
    earlier = backlog.QueueSample(100.0, 10.0)
    assert backlog.growth_per_s(earlier, backlog.QueueSample(130.0, 70.0), 30.0) == pytest.approx(2.0)
    assert backlog.growth_per_s(earlier, backlog.QueueSample(110.0, 70.0), 30.0) is None
    assert backlog.growth_per_s(None, backlog.QueueSample(130.0, 70.0), 30.0) is None
    # A sample a few seconds after the reference does not replace it; one an interval later does.
    assert backlog.next_sample(earlier, backlog.QueueSample(105.0, 12.0), 30.0) == earlier
    later = backlog.QueueSample(130.0, 70.0)
    assert backlog.next_sample(earlier, later, 30.0) == later
    assert backlog.next_sample(None, later, 30.0) == later


@pytest.mark.parametrize(
    ("previous", "now", "persists"),
    [
        pytest.param(backlog.QueueSample(100.0, 10.0), backlog.QueueSample(130.0, 70.0), True, id="grown"),
        pytest.param(backlog.QueueSample(100.0, 0.0), backlog.QueueSample(130.0, 70.0), False, id="from-empty"),
        pytest.param(backlog.QueueSample(100.0, 70.0), backlog.QueueSample(130.0, 70.0), False, id="steady"),
        pytest.param(backlog.QueueSample(100.0, 70.0), backlog.QueueSample(130.0, 10.0), False, id="shrunk"),
        pytest.param(backlog.QueueSample(100.0, 10.0), backlog.QueueSample(110.0, 70.0), False, id="too-soon"),
        pytest.param(None, backlog.QueueSample(130.0, 70.0), False, id="no-sample"),
    ],
)
def test_a_queue_persists_and_grows_only_when_seen_at_both_reads_and_larger(
    previous: backlog.QueueSample | None, now: backlog.QueueSample, persists: bool
) -> None:
    assert backlog.persists_and_grows(previous, now, 30.0) is persists


def test_drain_count_and_budget() -> None:
    assert backlog.budget_s(0.9, 300.0) == pytest.approx(30.0)
    assert backlog.drain_count(1.7, 180.0, 30.0) == 8  # ⌈1.7 + 6⌉
    assert backlog.drain_count(2.0, 90.0, 30.0) == 5  # exactly 5, not 6
    assert backlog.drain_count(2.0, 0.0, 30.0) == 2
    # A backlog no float holds gives no count (never an OverflowError, never maxReplicas).
    assert backlog.drain_count(2.0, float("inf"), 30.0) is None
    assert backlog.drain_count(2.0, 1e308, 1e-10) is None


def test_decode_service_is_a_full_replicas_share_of_its_steps() -> None:
    load = sizing.Load(rate_per_s=10.0, isl_mean_tokens=1000.0, osl_mean_tokens=200.0, osl_cv2=1.0)
    context = 1000.0 + 200.0 * (1.0 + 1.0) / 2.0
    batch = 256.0  # 400k tokens of cache hold 333 requests of 1,200: the batch limit binds
    expected = 200.0 * (0.008 + batch * (5e-5 + 1e-8 * context)) / batch
    assert backlog.decode_service_s(load, PERF) == pytest.approx(expected)
    small_cache = ReplicaPerformance(PERF.prefill, PERF.decode, 60_000, 131_072, 256, 1e-6)
    batch = 50.0  # 60k tokens hold 50 requests of 1,200
    expected = 200.0 * (0.008 + batch * (5e-5 + 1e-8 * context)) / batch
    assert backlog.decode_service_s(load, small_cache) == pytest.approx(expected)
    assert backlog.aggregated_service_s(load, PERF) == pytest.approx(
        backlog.prefill_service_s(load, PERF) + backlog.decode_service_s(load, PERF)
    )


@pytest.mark.parametrize(
    ("queued", "rate_per_s", "replicas"),
    [
        pytest.param(400, 20.0, 4, id="400-queued-4-replicas"),
        pytest.param(1000, 30.0, 6, id="1000-queued-6-replicas"),
    ],
)
def test_the_fluid_drain_time_matches_the_simulated_prefill_pool(queued: int, rate_per_s: float, replicas: int) -> None:
    """A prefill pool with a queue and arrivals below its capacity empties when the fluid model says:
    Q·s̄ / (n − λ·s̄) seconds (Newell 1982, ch. 2): simulated 10.4 s against 11.0 s, and 17.7 s
    against 18.3 s (the fleet batches waiting prompts, so it drains a little faster)."""
    isl = 1000
    service_s = 0.01 + 6e-5 * isl + 1e-9 * isl * isl
    rng = np.random.default_rng(3)
    steady = np.cumsum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * 600)))
    arrivals = np.concatenate((np.zeros(queued), steady))
    n = arrivals.size
    w = make_workload("backlog", arrivals, np.full(n, isl), np.full(n, 1))
    pools = {"prefill": PoolConfig(PERF, replicas, 1), "decode": PoolConfig(PERF, 8, 1)}
    f = Fleet(w, FleetConfig("Disaggregated", pools, cold_start_s=0.0), np.random.default_rng(0))
    f.run_to_completion()
    rec = f.records()
    waits = rec.prefill_start_s - rec.arrival_s
    served_at_once = rec.arrival_s[(rec.arrival_s > 0.0) & (waits < 1e-9)]
    drained_s = float(served_at_once.min())  # the first arrival that found the queue empty
    load = sizing.Load(rate_per_s=rate_per_s, isl_mean_tokens=float(isl), osl_mean_tokens=1.0, isl_cv2=0.0)
    predicted_s = queued * service_s / (replicas - rate_per_s * backlog.prefill_service_s(load, PERF))
    assert backlog.prefill_service_s(load, PERF) == pytest.approx(service_s, rel=0.01)
    assert drained_s == pytest.approx(predicted_s, rel=0.10)
