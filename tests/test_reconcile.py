"""The pure steps of one operator cycle: the decision with the cold start status records, the first cycles'
phases, a node group's room and the order of /scale writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenscale import api, manifests, reconcile
from tokenscale import status as st
from tokenscale.api import Role
from tokenscale.kube import capacity, scale
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.planner.plan import PoolDecision
from tokenscale.planner.reasons import Reason
from tokenscale.planner.sizing import Binding

T0 = 1_790_000_000.0
ROOT = Path(__file__).resolve().parents[1]
SPEC = manifests.load_one_pool(ROOT / "examples" / "vllm-disaggregated-70b.yaml").pool.spec


def _scale(replicas: int, ready: int) -> scale.ScaleState:
    return scale.ScaleState(replicas, replicas, "app=x", ready, True, "1")


def _previous(**decode: object) -> api.InferencePoolStatus:
    return api.InferencePoolStatus(pools=api.PoolStatuses(decode=api.PoolStatus(**decode)))  # type: ignore[arg-type]


def _reads(spec: api.InferencePoolSpec, decode: scale.ScaleState) -> reconcile.Reads:
    scales = {"prefill": _scale(1, 1), "decode": decode}
    replicas = {r: ReplicaCounts(s.replicas, s.ready_replicas) for r, s in scales.items()}
    return reconcile.Reads(scales, {}, {}, Observation(T0, 4.0, 2000.0, 300.0, replicas))


@pytest.mark.parametrize(
    ("previous", "decode", "horizon_s", "status"),
    [
        pytest.param(None, _scale(4, 2), None, (None, None, None), id="nothing-recorded"),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4),
            _scale(4, 2),
            None,
            (None, st.rfc3339(T0 - 100), 4),
            id="still-starting-keeps-timing",
        ),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4, cold_start_seconds=200.0),
            _scale(4, 4),
            (200.0 + 100.0 - SPEC.interval.seconds / 2) / 2,  # ready within the last interval: its midpoint
            ((200.0 + 100.0 - SPEC.interval.seconds / 2) / 2, None, None),
            id="ready-blended-with-previous",
        ),
        pytest.param(
            _previous(scale_up_time=st.rfc3339(T0 - 100), scale_up_replicas=4, cold_start_seconds=200.0),
            _scale(2, 2),
            200.0,
            (200.0, None, None),
            id="scaled-back-before-ready-stops-timing",
        ),
    ],
)
def test_the_cold_start_recorded_in_status_sets_the_horizon_and_is_written_back(
    previous: api.InferencePoolStatus | None,
    decode: scale.ScaleState,
    horizon_s: float | None,
    status: tuple[float | None, str | None, int | None],
) -> None:
    """`decide` reads the scale-up being timed from status and the replicas from `/scale`; the status
    it leads to carries the measurement on (the timing itself is `coldstart`'s, tests/planner/test_coldstart.py)."""
    spec = SPEC
    reads = _reads(spec, decode)
    decision = reconcile.decide(spec, previous, reads, T0)
    assert decision.planned is not None
    assert decision.planned.horizon_s == (spec.forecast.cold_start.seconds if horizon_s is None else horizon_s)
    facts = {r: st.PoolFacts(d.current_replicas, d.current_replicas) for r, d in decision.pools.items()}
    written = st.decided_status(spec, previous, 1, reads.observation, decision, facts, [], False, T0)
    pool = written.pools.decode
    assert pool is not None
    assert (pool.cold_start_seconds, pool.scale_up_time, pool.scale_up_replicas) == status


def test_first_cycles_spread_over_the_interval_and_stay_put() -> None:
    delays = [
        reconcile.first_delay_s({"metadata": {"uid": f"uid-{i}"}, "spec": {"interval": "30s"}}) for i in range(200)
    ]
    assert all(0.0 <= d < 30.0 for d in delays)
    assert max(delays) - min(delays) > 25.0  # spread, not bunched
    again = reconcile.first_delay_s({"metadata": {"uid": "uid-7"}, "spec": {"interval": "30s"}})
    assert again == delays[7]  # the same phase after a restart


def _capacity(free: int, pending: int, own: int | None) -> capacity.GpuCapacity:
    return capacity.GpuCapacity(nodes=1, cordoned_nodes=0, allocatable_gpus=free, used_gpus=0, free_gpus=free,
                                pending_gpus=pending, own_gpus=own)  # fmt: skip


@pytest.mark.parametrize(
    ("cap", "replicas", "room"),
    [
        pytest.param(_capacity(8, 4, 4), 1, 4, id="pods-of-every-replica-listed"),
        pytest.param(_capacity(8, 0, 0), 1, 4, id="target-just-created-its-pod-not-listed-yet"),
        pytest.param(_capacity(16, 4, 4), 3, 4, id="scaled-up-two-pods-not-listed-yet"),
        pytest.param(_capacity(16, 12, 12), 1, 4, id="scale-down-pods-still-listed-counted-once"),
        pytest.param(_capacity(8, 0, None), 1, 8, id="selector-not-equality-based-as-before"),
        pytest.param(_capacity(8, 12, 4), 1, -4, id="other-pods-pending-beyond-the-group"),
    ],
)
def test_room_in_a_node_group_counts_replicas_whose_pods_are_not_listed_yet(
    cap: capacity.GpuCapacity, replicas: int, room: int
) -> None:
    assert reconcile.room_gpus(cap, replicas, 4) == room


def _decision(role: Role, current: int, desired: int) -> PoolDecision:
    return PoolDecision(role=role, current_replicas=current, desired_replicas=desired, gpus=4 * desired,
                        predicted_ttft_s=None, predicted_tpot_s=None, kv_usage_fraction=None, binding=Binding.TTFT,
                        reason=Reason.STEADY, message="")  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "order"),
    [
        pytest.param({"prefill": (4, 5), "decode": (8, 7)}, ["decode", "prefill"], id="rebalance-frees-gpus-first"),
        pytest.param({"prefill": (5, 4), "decode": (7, 8)}, ["prefill", "decode"], id="the-other-way"),
        pytest.param({"prefill": (4, 5), "decode": (7, 8)}, ["prefill", "decode"], id="both-up-role-order"),
        pytest.param({"prefill": (5, 4), "decode": (8, 7)}, ["prefill", "decode"], id="both-down-role-order"),
        pytest.param({"prefill": (4, 5), "decode": (8, 8)}, ["decode", "prefill"], id="unchanged-before-up"),
        pytest.param({"aggregated": (2, 3)}, ["aggregated"], id="one-pool"),
    ],
)
def test_scale_downs_are_written_before_scale_ups(changes: dict[Role, tuple[int, int]], order: list[Role]) -> None:
    pools = {role: _decision(role, current, desired) for role, (current, desired) in changes.items()}
    assert reconcile.write_order(pools) == order
