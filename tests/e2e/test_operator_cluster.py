"""The operator as a platform team runs it: installed by the Helm chart and acting with the chart's
ServiceAccount; against many pools at once; through an apiserver restart; beside another writer.

Uses the same simulated fleet and real Prometheus as test_operator.py (harness/operator_env.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from harness.cluster import Cluster, write_kubeconfig
from harness.operator_env import (
    OperatorProcess,
    SimulatedFleet,
    condition,
    create_deployment,
    create_pool,
    get_pool,
    pool_manifest,
    replicas_of,
)
from harness.processes import Supervisor
from harness.resources import create_namespace, delete_namespace
from harness.tools import Helm
from harness.wait import wait_until
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tokenscale"
HIGH_RATE = 40.0


def _finish(op: OperatorProcess) -> None:
    if op.process is not None and op.process.alive():
        op.stop()
    assert op.tracebacks() == [], op.log()[-6000:]


def _scaled_up(apps: Any, custom: Any, namespace: str, name: str = "llama") -> dict[str, Any] | None:
    pool = get_pool(custom, namespace, name)
    desired = pool.get("status", {}).get("pools", {}).get("prefill", {}).get("desiredReplicas")
    if desired and desired > 1 and replicas_of(apps, namespace, "llama-prefill") == desired:
        return pool
    return None


def test_the_chart_service_account_scales_a_pool_and_can_do_nothing_more(
    helm: Helm,
    cluster: Cluster,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    fleet: SimulatedFleet,
    supervisor: Supervisor,
    tmp_path: Path,
    apis: tuple[Any, Any, Any],
    inferencepool_crd: Any,
) -> None:
    apps, custom, _ = apis
    watched = create_namespace(api_client, prefix="w")
    installed = False
    op: OperatorProcess | None = None
    try:
        helm.run("install", "ts", str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{watched}}}",
                 kubeconfig=cluster.kubeconfig_path)  # fmt: skip
        installed = True
        token = cluster.kubectl("create", "token", "ts-tokenscale", "-n", namespace, "--duration=1h").stdout.strip()
        kubeconfig = tmp_path / "operator.kubeconfig"
        write_kubeconfig(kubeconfig, server_url=cluster.server_url, ca_path=cluster.ca_path, token=token,
                         namespace=watched)  # fmt: skip
        create_deployment(apps, watched, "llama-prefill", 1)
        create_deployment(apps, watched, "llama-decode", 1)
        time.sleep(11)  # a full metrics window of load
        create_pool(custom, watched, pool_manifest("llama", fleet.prometheus.url))
        op = OperatorProcess(supervisor, kubeconfig, watched, tmp_path / "operator.log").start()
        pool = wait_until(lambda: _scaled_up(apps, custom, watched), what="a scale-up by the chart's SA",
                          timeout_s=40, interval_s=0.5)  # fmt: skip
        assert condition(pool, "Ready")["status"] == "True"  # type: ignore[index]

        # The same identity cannot do what its role does not grant.
        configuration = kubernetes.client.Configuration()
        configuration.host = cluster.server_url
        configuration.ssl_ca_cert = str(cluster.ca_path)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        as_operator = kubernetes.client.ApiClient(configuration)
        try:
            sa_apps = kubernetes.client.AppsV1Api(as_operator)
            sa_core = kubernetes.client.CoreV1Api(as_operator)
            for attempt in (
                lambda: sa_apps.delete_namespaced_deployment("llama-decode", watched),
                lambda: sa_apps.patch_namespaced_deployment("llama-decode", watched, {"spec": {"paused": True}}),
                lambda: sa_core.list_namespaced_secret(watched),
                lambda: sa_core.read_namespaced_secret("anything", namespace),
                lambda: sa_apps.patch_namespaced_deployment_scale("x", namespace, {"spec": {"replicas": 0}}),
            ):
                with pytest.raises(ApiException) as err:
                    attempt()
                assert err.value.status == 403
        finally:
            as_operator.close()
        assert replicas_of(apps, watched, "llama-decode") >= 1
    finally:
        if op is not None:
            _finish(op)
        if installed:
            helm.run("uninstall", "ts", "--namespace", namespace, kubeconfig=cluster.kubeconfig_path)
        delete_namespace(api_client, watched)


def test_fifty_pools_are_each_reconciled_every_interval(
    cluster: Cluster,
    namespace: str,
    fleet: SimulatedFleet,
    supervisor: Supervisor,
    tmp_path: Path,
    apis: tuple[Any, Any, Any],
    inferencepool_crd: Any,
) -> None:
    apps, custom, _ = apis
    names = [f"pool-{i:02d}" for i in range(50)]
    for name in names:
        create_deployment(apps, namespace, f"{name}-prefill", 1)
        create_deployment(apps, namespace, f"{name}-decode", 1)
        create_pool(custom, namespace, pool_manifest(name, fleet.prometheus.url, targets=name, interval="5s"))
    op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, tmp_path / "operator.log").start()
    try:

        def cycles() -> dict[str, float] | None:
            """Cycles run per pool, from the operator's own metrics: a settled pool's status is no
            longer written every cycle (only when something changed), so it cannot tell."""
            found = {
                s.labels["pool"]: s.value
                for family in text_string_to_metric_families(op.metrics())
                if family.name == "tokenscale_reconcile_duration_seconds"
                for s in family.samples
                if s.name.endswith("_count")
            }
            return found if len(found) == len(names) else None

        first = wait_until(cycles, what="a cycle of every pool", timeout_s=60, interval_s=1.0)
        time.sleep(12)  # two intervals more
        second = cycles()
        assert second is not None
        stale = {n: second[n] - first[n] for n in names if second[n] - first[n] < 2}
        assert stale == {}, f"pools not re-planned within two intervals: {stale}"
        assert all(replicas_of(apps, namespace, f"{n}-prefill") > 1 for n in names)
    finally:
        _finish(op)


def test_the_watch_resumes_after_an_apiserver_restart_and_a_conflicting_writer_is_survived(
    cluster: Cluster,
    namespace: str,
    fleet: SimulatedFleet,
    supervisor: Supervisor,
    tmp_path: Path,
    apis: tuple[Any, Any, Any],
    inferencepool_crd: Any,
) -> None:
    apps, custom, _ = apis
    create_deployment(apps, namespace, "llama-prefill", 1)
    create_deployment(apps, namespace, "llama-decode", 1)
    op = OperatorProcess(supervisor, cluster.kubeconfig_path, namespace, tmp_path / "operator.log").start()
    try:
        fleet.set_rate(2.0)
        create_pool(custom, namespace, pool_manifest("llama", fleet.prometheus.url))
        wait_until(
            lambda: get_pool(custom, namespace, "llama").get("status", {}).get("lastDecision") or None,
            what="a first decision",
            timeout_s=40,
            interval_s=0.5,
        )
        cluster.restart_apiserver()
        # Another controller keeps writing the Deployment (labels), so /scale replaces race with it.
        stop = threading.Event()
        writes = 0

        def other_writer() -> None:
            nonlocal writes
            while not stop.is_set():
                try:
                    apps.patch_namespaced_deployment(
                        "llama-prefill", namespace, {"metadata": {"labels": {"writer": str(writes % 7)}}}
                    )
                    writes += 1
                except ApiException:
                    pass
                stop.wait(0.02)

        writer = threading.Thread(target=other_writer, name="conflicting-writer")
        writer.start()
        try:
            fleet.set_rate(HIGH_RATE)
            # A pool created after the restart is seen (the watch resumed), and the load change is acted on.
            create_deployment(apps, namespace, "late-prefill", 1)
            create_deployment(apps, namespace, "late-decode", 1)
            create_pool(custom, namespace, pool_manifest("late", fleet.prometheus.url, targets="late"))
            wait_until(lambda: _scaled_up(apps, custom, namespace), what="scale-up during conflicting writes",
                       timeout_s=60, interval_s=0.5)  # fmt: skip
            wait_until(
                lambda: get_pool(custom, namespace, "late").get("status", {}).get("lastDecision") or None,
                what="the pool created after the restart planned",
                timeout_s=40,
                interval_s=0.5,
            )
        finally:
            stop.set()
            writer.join(timeout=10)
        assert writes >= 5  # the other writer was busy throughout (the real 409 path: tests/kube/test_scale.py)
    finally:
        _finish(op)
