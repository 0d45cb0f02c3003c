"""The operator end to end: `tokenscale run` against the real kube-apiserver 1.20 and a real Prometheus
scraping a simulated vLLM fleet. Each test has its own namespace, fleet, Prometheus and operator.

Timeline knobs (operator_env.POOL_SPEC): interval 3 s, metrics window 10 s, scale-down
stabilization 20 s. At 40 req/s the 70B pool needs several prefill replicas; at 2 req/s one each.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from harness.cluster import Cluster
from harness.operator_env import (
    OperatorProcess,
    SimulatedFleet,
    condition,
    create_deployment,
    create_pool,
    events_of,
    get_pool,
    pool_manifest,
    replicas_of,
)
from harness.wait import WaitTimeout, wait_until

from tokenscale import status as st

pytestmark = pytest.mark.e2e

HIGH_RATE, LOW_RATE = 40.0, 2.0


def _deployments(apps: Any, namespace: str, prefill: int = 1, decode: int = 1) -> None:
    create_deployment(apps, namespace, "llama-prefill", prefill)
    create_deployment(apps, namespace, "llama-decode", decode)


def test_scales_up_under_load_and_down_only_after_stabilization(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str, cluster: Cluster
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace)
    time.sleep(11)  # one full metrics window of the high load in Prometheus
    create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
    operator.start()

    # Scale-up: within two intervals of the first decision, the Deployments carry the planned counts.
    def scaled_up() -> dict[str, Any] | None:
        pool = get_pool(custom, namespace, "llama")
        pools = pool.get("status", {}).get("pools", {})
        desired = pools.get("prefill", {}).get("desiredReplicas")
        if desired and desired > 1 and replicas_of(apps, namespace, "llama-prefill") == desired:
            return pool
        return None

    pool = wait_until(scaled_up, what="prefill scaled up to the plan", timeout_s=30, interval_s=0.5)
    status = pool["status"]
    assert replicas_of(apps, namespace, "llama-decode") == status["pools"]["decode"]["desiredReplicas"]
    assert status["observation"]["requestRatePerSecond"] == pytest.approx(HIGH_RATE, rel=0.25)
    assert condition(pool, "MetricsAvailable")["status"] == "True"  # type: ignore[index]
    assert condition(pool, "Ready")["status"] == "True"  # type: ignore[index]
    assert status["lastDecision"]["reason"]
    wait_until(  # Events follow the /scale write and the status within the same cycle
        lambda: "ScaledUp" in {e["reason"] for e in events_of(core, namespace, "llama")} or None,
        what="a ScaledUp Event",
        timeout_s=15,
        interval_s=0.5,
    )
    row = cluster.kubectl("get", "tspool", "llama", "-n", namespace, "--no-headers").stdout.split()
    prefill_now = replicas_of(apps, namespace, "llama-prefill")
    assert row[0] == "llama" and row[1] == "Disaggregated"
    assert row[4].split("/")[1] == str(status["pools"]["prefill"]["desiredReplicas"]), row
    exported = operator.metrics()
    assert f'tokenscale_desired_replicas{{namespace="{namespace}",pool="llama",role="prefill"}}' in exported
    assert "process_resident_memory_bytes " in exported  # the operator's own memory, for the dashboard

    # Scale-down: the load drops; replicas stay for the 20 s stabilization window, then go down.
    dropped = time.time()
    fleet.set_rate(LOW_RATE)

    def scaled_down() -> float | None:
        return time.time() if replicas_of(apps, namespace, "llama-prefill") < prefill_now else None

    went_down = wait_until(scaled_down, what="prefill scaled down", timeout_s=90, interval_s=0.5)
    # The last recommendation made at high load came at most one interval (3 s) before the drop, and
    # the window holds the count for 20 s after it: no scale-down before drop + 17 s.
    assert went_down - dropped >= 17.0, f"scaled down {went_down - dropped:.1f}s after the load dropped"
    # The cycle posts its Events after the /scale write and the status: poll, do not read once.
    wait_until(
        lambda: "ScaledDown" in {e["reason"] for e in events_of(core, namespace, "llama")} or None,
        what="a ScaledDown Event",
        timeout_s=15,
        interval_s=0.5,
    )


def test_dry_run_writes_only_status_and_events_and_paused_writes_nothing(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace)
    time.sleep(11)
    create_pool(custom, namespace, pool_manifest("advisory", fleet.prometheus.url, dryRun=True))
    operator.start()

    def advised() -> dict[str, Any] | None:
        pool = get_pool(custom, namespace, "advisory")
        desired = pool.get("status", {}).get("pools", {}).get("prefill", {}).get("desiredReplicas")
        return pool if desired and desired > 1 else None

    pool = wait_until(advised, what="an advisory decision in status", timeout_s=30, interval_s=0.5)
    assert pool["status"]["lastDecision"]["dryRun"] is True
    assert condition(pool, "ScalingActive")["reason"] == "DryRun"  # type: ignore[index]
    wait_until(
        lambda: "WouldScale" in {e["reason"] for e in events_of(core, namespace, "advisory")} or None,
        what="a WouldScale Event",
        timeout_s=15,
        interval_s=0.5,
    )
    assert replicas_of(apps, namespace, "llama-prefill") == 1 and replicas_of(apps, namespace, "llama-decode") == 1

    # Paused: after the status says so, neither /scale nor the status changes again.
    custom.patch_namespaced_custom_object(
        "tokenscale.dev", "v1alpha1", namespace, "inferencepools", "advisory", {"spec": {"paused": True}}
    )
    wait_until(
        lambda: (
            (condition(get_pool(custom, namespace, "advisory"), "ScalingActive") or {}).get("reason") == "Paused"
            or None
        ),
        what="ScalingActive=False Paused",
        timeout_s=15,
        interval_s=0.5,
    )
    version = get_pool(custom, namespace, "advisory")["metadata"]["resourceVersion"]
    time.sleep(10)  # three intervals: a paused pool must not be written
    assert get_pool(custom, namespace, "advisory")["metadata"]["resourceVersion"] == version
    assert replicas_of(apps, namespace, "llama-prefill") == 1 and replicas_of(apps, namespace, "llama-decode") == 1


def test_prometheus_down_and_a_missing_target_hold_replicas_with_reasons(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace, prefill=3, decode=2)
    create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
    operator.start()
    wait_until(
        lambda: (
            (condition(get_pool(custom, namespace, "llama"), "MetricsAvailable") or {}).get("status") == "True" or None
        ),
        what="metrics available",
        timeout_s=40,
        interval_s=0.5,
    )
    fleet.prometheus.stop()

    def metrics_down() -> dict[str, Any] | None:
        pool = get_pool(custom, namespace, "llama")
        c = condition(pool, "MetricsAvailable") or {}
        return pool if c.get("status") == "False" else None

    pool = wait_until(metrics_down, what="MetricsAvailable=False", timeout_s=30, interval_s=0.5)
    assert "cannot connect" in condition(pool, "MetricsAvailable")["message"]  # type: ignore[index]
    time.sleep(7)  # two more intervals without metrics
    assert replicas_of(apps, namespace, "llama-prefill") >= 3 and replicas_of(apps, namespace, "llama-decode") >= 2
    assert "MetricsMissing" in {e["reason"] for e in events_of(core, namespace, "llama")}

    # The decode Deployment is deleted: a condition and an Event, the prefill pool untouched; then recreated.
    prefill_before = replicas_of(apps, namespace, "llama-prefill")
    apps.delete_namespaced_deployment("llama-decode", namespace)

    def target_missing() -> dict[str, Any] | None:
        c = condition(get_pool(custom, namespace, "llama"), "Ready") or {}
        return c if c.get("reason") == "TargetNotFound" else None

    ready = wait_until(target_missing, what="Ready=False TargetNotFound", timeout_s=20, interval_s=0.5)
    assert "llama-decode" in ready["message"]
    assert replicas_of(apps, namespace, "llama-prefill") == prefill_before
    create_deployment(apps, namespace, "llama-decode", 2)
    wait_until(
        lambda: (
            (condition(get_pool(custom, namespace, "llama"), "Ready") or {}).get("reason") != "TargetNotFound" or None
        ),
        what="the target found again",
        timeout_s=20,
        interval_s=0.5,
    )


def test_a_restarted_operator_continues_the_stabilization_window(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace)
    time.sleep(11)
    manifest = pool_manifest("llama", fleet.prometheus.url)
    manifest["spec"]["behavior"] = {"scaleDown": {"stabilizationWindow": "30s"}}
    create_pool(custom, namespace, manifest)
    operator.start()
    wait_until(
        lambda: replicas_of(apps, namespace, "llama-prefill") > 1 or None,
        what="a scale-up",
        timeout_s=30,
        interval_s=0.5,
    )
    high = replicas_of(apps, namespace, "llama-prefill")
    dropped = time.time()
    fleet.set_rate(LOW_RATE)
    time.sleep(12)  # the window now sees low load; stabilization holds the high count
    operator.kill()  # mid-stabilization: the history is in status, not in the dead process
    recorded = get_pool(custom, namespace, "llama")["status"]["recommendations"]
    assert any((r.get("prefill") or 0) >= high for r in recorded)
    operator.start()
    went_down = wait_until(
        lambda: time.time() if replicas_of(apps, namespace, "llama-prefill") < high else None,
        what="the scale-down after the window",
        timeout_s=90,
        interval_s=0.5,
    )
    # The window holds the high count 30 s from the last high recommendation (≤ one 3 s interval
    # before the drop), across the restart: not before drop + 27 s. A restart that lost the history
    # would seed it with the current count and hold until restart + 30 s, i.e. drop + 42 s or later.
    assert 27.0 <= went_down - dropped < 42.0, f"scaled down {went_down - dropped:.1f}s after the drop"
    # The cycle that scaled down writes the status right after /scale: wait for it, then check it.
    last_scale = wait_until(
        lambda: (
            (t := st.epoch_s(get_pool(custom, namespace, "llama")["status"]["pools"]["prefill"]["lastScaleTime"]))
            and t > dropped
            and t
            or None
        ),
        what="the scale-down recorded in status",
        timeout_s=15,
        interval_s=0.5,
    )
    assert last_scale - dropped >= 26.0


def test_invalid_spec_beyond_the_schema_is_a_condition_not_a_crash(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace)
    # kube-apiserver 1.20 has no CEL: a disaggregated vLLM pool without metricsLabels gets through
    # admission there, and the operator must say what to fix.
    manifest = pool_manifest("unlabelled", fleet.prometheus.url)
    del manifest["spec"]["pools"]["decode"]["metricsLabels"]
    create_pool(custom, namespace, manifest)
    operator.start()

    def invalid() -> dict[str, Any] | None:
        c = condition(get_pool(custom, namespace, "unlabelled"), "Ready") or {}
        return c if c.get("reason") == "InvalidSpec" else None

    ready = wait_until(invalid, what="Ready=False InvalidSpec", timeout_s=20, interval_s=0.5)
    assert "metricsLabels" in ready["message"]
    assert "InvalidSpec" in {e["reason"] for e in events_of(core, namespace, "unlabelled")}
    assert replicas_of(apps, namespace, "llama-decode") == 1


def test_kubectl_describe_shows_the_last_decision(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str, cluster: Cluster
) -> None:
    apps, custom, core = apis
    _deployments(apps, namespace)
    time.sleep(11)
    create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
    operator.start()
    wait_until(
        lambda: get_pool(custom, namespace, "llama").get("status", {}).get("lastDecision") or None,
        what="a decision",
        timeout_s=30,
        interval_s=0.5,
    )
    described = cluster.kubectl("describe", "tspool", "llama", "-n", namespace).stdout
    reason = get_pool(custom, namespace, "llama")["status"]["lastDecision"]["reason"]
    assert "Last Decision" in described and reason.split(":")[0] in described
    try:
        cluster.kubectl("get", "tspool", "-n", namespace)
    except subprocess.CalledProcessError as err:  # pragma: no cover - the failure message is the point
        raise AssertionError(err.stderr) from None


def _cycles_run(op: OperatorProcess, name: str) -> float:
    """Cycles the operator has run for pool `name` (its reconcile-duration histogram's count)."""
    for line in op.metrics().splitlines():
        if line.startswith("tokenscale_reconcile_duration_seconds_count{") and f'pool="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_settled_pool_is_not_written_every_cycle(
    fleet: SimulatedFleet, operator: OperatorProcess, apis: tuple[Any, Any, Any], namespace: str
) -> None:
    """STYLE.md §14 on the real apiserver: cycles that change nothing a user or the next cycle needs
    leave the pool's resourceVersion alone (before issue 13 every cycle rewrote the status)."""
    apps, custom, _ = apis
    fleet.set_rate(LOW_RATE)
    _deployments(apps, namespace)
    time.sleep(11)  # one full metrics window of the low load
    create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
    operator.start()
    wait_until(lambda: get_pool(custom, namespace, "llama").get("status", {}).get("lastDecision"),
               what="a first decision", timeout_s=30, interval_s=0.5)  # fmt: skip

    changes: list[str] = []  # what moved between writes, for the failure message

    def settled() -> tuple[str, float] | None:
        """The resourceVersion, once it has not moved over four cycles (3 s apart)."""
        before = get_pool(custom, namespace, "llama")
        cycles = _cycles_run(operator, "llama")
        wait_until(lambda: _cycles_run(operator, "llama") >= cycles + 4 or None,
                   what="four more cycles", timeout_s=30, interval_s=0.5)  # fmt: skip
        after = get_pool(custom, namespace, "llama")
        if after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]:
            return after["metadata"]["resourceVersion"], cycles
        old, new = st.material(before.get("status")), st.material(after.get("status"))
        changes.append(str({k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}))
        return None

    try:
        version, cycles = wait_until(settled, what="four cycles without a status write", timeout_s=150, interval_s=0.1)
    except WaitTimeout:
        raise AssertionError("written while nothing changed? " + "\n".join(changes)) from None
    print("changes before it settled:", *changes, sep="\n")
    pool = get_pool(custom, namespace, "llama")
    assert (condition(pool, "Ready") or {}).get("status") == "True"
    assert pool["status"]["observation"]["requestRatePerSecond"] > 0  # planned on data, not held
    assert _cycles_run(operator, "llama") >= cycles + 4
