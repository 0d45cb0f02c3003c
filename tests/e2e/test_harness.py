"""The test harness itself: the controller manager works, Prometheus scrapes and restarts, leaks are seen.

These prove the fixtures of tests/conftest.py do what later e2e tests rely on: a Deployment gets a
ReplicaSet and Pods from the real kube-controller-manager; a Prometheus from `prometheus_factory`
scrapes an exporter, keeps its data over a restart and is unreachable while stopped; the leak check
sees leftover child processes and threads; and a missing program's error names the set-up script.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kubernetes
import prometheus_client
import pytest
import urllib3
from harness import binaries
from harness.cluster import Cluster
from harness.leaks import Snapshot
from harness.processes import descendant_pids, free_port
from harness.prometheus import PrometheusFactory
from harness.tools import Helm
from harness.wait import wait_until


@pytest.mark.e2e
def test_controller_manager_gives_a_deployment_a_replicaset_and_pods(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    labels = {"app": "probe"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }
    # The generic client sends and returns plain JSON for built-in API groups too ("apps/v1").
    objects = kubernetes.client.CustomObjectsApi(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    created = cast(
        dict[str, Any], objects.create_namespaced_custom_object("apps", "v1", namespace, "deployments", deployment)
    )

    def replicasets_of_deployment() -> list[dict[str, Any]] | None:
        listed = cast(dict[str, Any], objects.list_namespaced_custom_object("apps", "v1", namespace, "replicasets"))
        items: list[dict[str, Any]] = listed["items"]
        uid = created["metadata"]["uid"]
        owned = [i for i in items if any(o["uid"] == uid for o in i["metadata"].get("ownerReferences", []))]
        return owned or None

    replicasets = wait_until(replicasets_of_deployment, what="a ReplicaSet owned by the Deployment", timeout_s=60)
    assert [r["spec"]["replicas"] for r in replicasets] == [2]

    def pods_of_replicaset() -> list[Any] | None:
        uid = replicasets[0]["metadata"]["uid"]
        pods = core.list_namespaced_pod(namespace).items
        owned = [p for p in pods if p.metadata and any(o.uid == uid for o in p.metadata.owner_references or [])]
        return owned if len(owned) == 2 else None

    pods = wait_until(pods_of_replicaset, what="two Pods owned by the ReplicaSet", timeout_s=60)
    assert {p.status.phase for p in pods} == {"Pending"}  # no scheduler or kubelet in the test cluster


@pytest.mark.e2e
def test_objects_survive_an_apiserver_restart(
    cluster: Cluster, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace, kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name="kept"), data={"k": "v"})
    )
    old_pid = cluster.apiserver.pid
    cluster.restart_apiserver()
    assert cluster.apiserver.pid != old_pid
    kept = wait_until(
        lambda: core.read_namespaced_config_map("kept", namespace),
        what="the ConfigMap after the restart",
        timeout_s=30,
        retry_on=(urllib3.exceptions.HTTPError,),
    )
    assert kept.data == {"k": "v"}


@pytest.fixture
def exporter() -> Iterator[tuple[str, prometheus_client.Gauge]]:
    """A prometheus_client exporter on a free port with one gauge; shut down after the test."""
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge("tokenscale_harness_probe", "A value the harness test sets.", registry=registry)
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.prometheus
def test_prometheus_scrapes_keeps_data_over_a_restart_and_is_down_when_stopped(
    prometheus_factory: PrometheusFactory, exporter: tuple[str, prometheus_client.Gauge]
) -> None:
    target, gauge = exporter
    gauge.set(42)
    prometheus = prometheus_factory([target])
    series = prometheus.wait_for_series("tokenscale_harness_probe")
    assert series[0]["value"][1] == "42"

    prometheus.restart()
    gauge.set(7)
    assert wait_until(
        lambda: prometheus.query("tokenscale_harness_probe == 7") or None, what="the new value", timeout_s=30
    )
    assert prometheus.query("count_over_time(tokenscale_harness_probe[5m]) > 1"), "samples before the restart are kept"

    prometheus.stop()
    with pytest.raises(urllib.error.URLError):
        prometheus.query("up")


def test_descendant_pids_sees_a_child_until_it_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert child.pid in descendant_pids(os.getpid())
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.pid not in descendant_pids(os.getpid())


def test_leak_snapshot_reports_and_kills_a_leftover_child_process() -> None:
    before = Snapshot.take()
    child = subprocess.Popen(["sleep", "60"])
    try:
        found = before.leftovers(thread_grace_s=0)
        assert found == [f"child process {child.pid}: sleep 60"]
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait(timeout=10)


def test_leak_snapshot_ignores_expected_processes() -> None:
    before = Snapshot.take()
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert before.leftovers(expected_pids={child.pid}, thread_grace_s=0) == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(timeout=10)


def test_leak_snapshot_reports_a_running_non_daemon_thread_but_not_a_finished_one() -> None:
    before = Snapshot.take()
    release = threading.Event()
    finished = threading.Thread(target=lambda: None, name="finished")
    finished.start()
    running = threading.Thread(target=release.wait, args=(60,), name="still-running")
    running.start()
    try:
        assert before.leftovers(thread_grace_s=0.1) == ["non-daemon thread 'still-running' still running"]
    finally:
        release.set()
        running.join(timeout=10)
    assert before.leftovers(thread_grace_s=0.1) == []


def test_helm_is_3_18_with_private_homes(helm: Helm, tmp_path: Path) -> None:
    assert helm.run("version", "--short").stdout.startswith("v3.18.")
    created = helm.run("create", str(tmp_path / "probe"))
    assert "Creating" in created.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in helm.run("lint", str(tmp_path / "probe")).stdout
    homes = helm.run("env").stdout
    assert f'HELM_CACHE_HOME="{helm.home / "cache"}"' in homes


@pytest.mark.parametrize(
    ("program", "env_var"),
    [
        pytest.param("helm", "TOKENSCALE_HELM", id="helm"),
        pytest.param("kubectl", "TOKENSCALE_KUBECTL", id="kubectl"),
        pytest.param("kube-apiserver", "TOKENSCALE_K8S_BIN", id="kube-apiserver"),
        pytest.param("prometheus", "TOKENSCALE_PROMETHEUS", id="prometheus"),
        pytest.param("vllm-python", "TOKENSCALE_VLLM_PYTHON", id="vllm"),
    ],
)
def test_missing_program_error_names_the_setup_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, program: str, env_var: str
) -> None:
    monkeypatch.setenv(env_var, str(tmp_path / "nowhere"))
    with pytest.raises(binaries.MissingBinaryError, match="scripts/setup-test-env.sh") as raised:
        binaries.find(program)
    assert env_var in str(raised.value)
