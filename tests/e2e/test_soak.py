"""The chaos soak of bench/bench_soak.py, shorter (issue 13): every fault kind at least once against
the real operator, apiserver, Prometheus and simulated fleet, with no invariant violated and every
pool re-planned after every fault; and the soak's checker itself, on rounds made up here, so a
violation it should see is seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.cluster import Cluster
from harness.processes import Supervisor
from harness.prometheus import PrometheusFactory
from harness.soak import DATA_GRACE_S, FAULT_KINDS, Look, SoakConfig, check, run_soak

POOLS = ["p-000", "p-001"]
INTERVAL_S = 6.0  # two intervals leave room for an apiserver that answers /readyz before its caches fill
T = 1000.0  # a monotonic time for the made-up rounds
ROOM = {"p-000-prefill": 24, "p-000-decode": 40, "p-001-prefill": 24, "p-001-decode": 40}


def _look(replicas: dict[str, int], previous: dict[str, int] | None = None, **fields: Any) -> Look:
    base = {"p-000-prefill": 1, "p-000-decode": 2, "p-001-prefill": 1, "p-001-decode": 2}  # 12 GPUs of 20
    return Look(
        now=T,
        previous_at=T - 1.0,
        replicas={**base, **replicas},
        previous={**base, **(previous or {})},
        data_fault=fields.pop("data_fault", None),
        allocatable=fields.pop("allocatable", ROOM),
        **fields,
    )


@pytest.mark.parametrize(
    ("look", "violations", "changes"),
    [
        pytest.param(_look({}), [], 0, id="steady"),
        pytest.param(_look({"p-000-decode": 3}, {"p-000-decode": 2}), [], 1, id="operator-scale-up-within-room"),
        pytest.param(
            _look({"p-000-decode": 17}, {"p-000-decode": 17}),
            [("bounds", "p-000-decode"), ("gpu-budget", "p-000")],
            0,
            id="above-max-and-so-over-budget",
        ),
        pytest.param(_look({"p-000-prefill": 0}), [("bounds", "p-000-prefill")], 1, id="below-min"),
        pytest.param(
            _look({"p-000-prefill": 5, "p-000-decode": 8}, {"p-000-prefill": 5, "p-000-decode": 8}),
            [("gpu-budget", "p-000")],
            0,
            id="over-budget",
        ),  # fmt: skip
        pytest.param(
            _look(
                {"p-000-prefill": 5, "p-000-decode": 8},
                {"p-000-prefill": 5, "p-000-decode": 8},
                racer_touched={"p-000": T - 2 * INTERVAL_S},
            ),  # fmt: skip
            [],
            0,
            id="over-budget-within-two-intervals-of-the-racer",
        ),
        pytest.param(
            _look(
                {"p-000-prefill": 5, "p-000-decode": 8},
                {"p-000-prefill": 5, "p-000-decode": 8},
                racer_touched={"p-000": T - 2 * INTERVAL_S - 2},
            ),  # fmt: skip
            [("gpu-budget", "p-000")],
            0,
            id="over-budget-left-by-the-racer-too-long",
        ),
        pytest.param(
            _look({"p-001-decode": 3}, data_fault=("garbage", T - DATA_GRACE_S - 2, None)),
            [("no-scale-on-bad-data", "p-001-decode")],
            1,
            id="scale-during-garbage",
        ),
        pytest.param(
            _look({"p-001-decode": 3}, data_fault=("garbage", T - DATA_GRACE_S, None)),
            [],
            1,
            id="scale-within-the-grace-after-a-data-fault-starts",
        ),
        pytest.param(
            _look({"p-001-decode": 3}, data_fault=("prometheus-restart", T - 60, T - 0.5)),
            [],
            1,
            id="scale-in-the-round-after-a-data-fault-ends",
        ),
        pytest.param(
            _look({"p-001-decode": 3}, data_fault=("garbage", T - 60, None), touched={"p-001-decode": T - 1.2}),
            [],
            0,
            id="a-write-by-the-soak-is-not-the-operators",
        ),
        pytest.param(
            _look({"p-000-prefill": 3}, allocatable={**ROOM, "p-000-prefill": 8}),
            [("node-group", "p-000-prefill")],
            1,
            id="operator-scale-up-past-the-node-group",
        ),
        pytest.param(
            _look(
                {"p-000-prefill": 3},
                allocatable={**ROOM, "p-000-prefill": 4},
                allocatable_before={"p-000-prefill": 32},
                capacity_changed=T - 3,
            ),  # fmt: skip
            [],
            1,
            id="scale-up-on-the-capacity-just-before-a-change",
        ),
        pytest.param(
            _look({"p-000-prefill": 3}, allocatable={**ROOM, "p-000-prefill": 8}, touched={"p-000-prefill": T - 0.8}),
            [],
            0,
            id="racer-scale-up-past-the-node-group",
        ),
        pytest.param(_look({}, gone=frozenset({"p-001-prefill"})), [], 0, id="deleted-by-the-soak"),
        pytest.param(
            Look(
                now=T,
                previous_at=T - 1,
                replicas={"p-000-prefill": 1, "p-000-decode": 1, "p-001-decode": 1},
                previous={},
                data_fault=None,
                allocatable=ROOM,
            ),  # fmt: skip
            [("target", "p-001-prefill")],
            0,
            id="target-missing",
        ),
    ],
)
def test_the_soak_checker_sees_each_kind_of_violation(
    look: Look, violations: list[tuple[str, str]], changes: int
) -> None:
    found, counted = check(POOLS, INTERVAL_S, look)
    assert [(invariant, subject) for invariant, subject, _ in found] == violations
    assert counted == changes


def test_chaos_soak_every_fault_no_violation_every_pool_replanned(
    cluster: Cluster,
    namespace: str,
    supervisor: Supervisor,
    prometheus_factory: PrometheusFactory,
    inferencepool_crd: Any,
    tmp_path: Path,
) -> None:
    config = SoakConfig(duration_s=60.0, pools=10, interval_s=INTERVAL_S, garbage_s=2 * INTERVAL_S, seed=13)
    report = run_soak(config, cluster, namespace, supervisor, prometheus_factory, tmp_path)
    print("\n".join(report.lines()))
    assert report.violations == [], "\n".join(report.lines())
    assert {f.kind for f in report.faults} == set(FAULT_KINDS)
    for fault in report.faults:
        assert fault.cleared is not None
        assert sorted(fault.recovered_s) == [f"p-{i:03d}" for i in range(config.pools)], fault
        assert max(fault.recovered_s.values()) <= 2 * config.interval_s + 1.0, fault
    assert report.unexpected_exits == 0 and report.tracebacks == 0
    assert report.operator_starts == 1 + sum(1 for f in report.faults if f.kind == "operator-kill")
    # Not vacuous: the observer looked, the operator scaled during the soak, and the racer raced it.
    assert report.observations >= report.elapsed_s / 2 and report.skipped_observations < report.observations
    assert report.operator_scale_changes > 0 and report.racer_writes > 0
